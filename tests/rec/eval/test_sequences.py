import numpy as np
import torch

from livemind.rec.eval.protocol import evaluate_sampled, leave_one_out
from livemind.rec.eval.sequences import generator_full_ranking, generator_scores, item_sids, sequence_log
from livemind.rec.model.generator import GeneratorConfig
from livemind.rec.model.train import TrainConfig, train_generator
from livemind.rec.tokenizer.rq import RQConfig
from tests.rec.baselines.test_sasrec import cyclic_sequences


def test_sequence_log_positions_and_sids():
    sids = np.arange(12).reshape(6, 2)  # items 0..5 (0 = padding), 2 levels
    log = sequence_log([np.array([3, 1]), np.array([5, 2, 4])], sids, "v")
    assert log.viewer.tolist() == [0, 0, 1, 1, 1]
    assert log.time.tolist() == [0, 1, 0, 1, 2]
    assert log.first.tolist() == [0, 0, 2, 2, 2]
    assert log.sid.tolist() == [[6, 7], [2, 3], [10, 11], [4, 5], [8, 9]]
    assert log.examples(min_history=1).tolist() == [1, 3, 4]


def test_item_sids_are_nearly_unique_and_pad_is_zero():
    vecs = np.random.default_rng(0).normal(size=(201, 8)).astype(np.float32)
    sids = item_sids(vecs, RQConfig(levels=3, codebook_size=16, n_iter=10))
    assert sids.shape == (201, 3) and sids[0].tolist() == [0, 0, 0]
    assert len({tuple(s) for s in sids[1:]}) >= 195  # 200 items in 16^3 codes: few collisions


def test_generator_learns_item_sequences(tmp_path):
    split = leave_one_out(cyclic_sequences(n_users=200, n_items=30))
    sids = np.vstack([[0, 0], np.stack([np.arange(30) // 6, np.arange(30) % 6], 1)])  # a unique SID per item
    log = sequence_log(split.train, sids, "cyclic")
    cfg = TrainConfig(generator=GeneratorConfig(levels=2, codebook_size=6, d_model=32, n_heads=2, n_layers=1,
                                                max_history=10, time_features=False, level_weights=(1.0, 1.0)),
                      epochs=4, batch_size=64, lr=1e-2, checkpoint_every=10_000)
    res = train_generator(cfg, log, log.examples(min_history=1), tmp_path, resume=False)
    assert np.mean(res.losses[-5:]) < 0.5 * np.mean(res.losses[:5])
    assert (tmp_path / "losses.csv").read_text().startswith("step,loss\n1,")
    assert (tmp_path / "loss.png").stat().st_size > 1000
    with torch.inference_mode():
        r = evaluate_sampled(generator_scores(res.model, sids), split, 10, n_neg=20)
        full = generator_full_ranking(res.model, sids, split, 10, beam=12)
    assert r["hr@10"] >= 0.95
    assert full["hr@10"] >= 0.9 and full["n"] == 200
