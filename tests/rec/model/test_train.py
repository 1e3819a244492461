import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from livemind.errors import DataError
from livemind.rec.baselines.popularity import PopularityRanker
from livemind.rec.data.segments import SegmentFrame
from livemind.rec.data.watch import WatchLog
from livemind.rec.eval.offline import evaluate
from livemind.rec.live.rooms import LiveRooms
from livemind.rec.model.checkpoint import load_generator, saved_generator_config
from livemind.rec.model.generator import LOG_LP_WEIGHT_RANGE, GeneratorConfig, OneLiveGenerator
from livemind.rec.model.prior import fit_room_prior, refit_rows
from livemind.rec.model.train import GeneratorTrainer, TrainConfig
from tests.rec.tokenizer.test_tokenizer import FAST

CFG = TrainConfig(generator=GeneratorConfig(d_model=16, n_heads=2, n_layers=1, levels=2, codebook_size=16,
                                            level_weights=(1.0, 1.0), max_history=8),
                  epochs=2, batch_size=32, lr=3e-3, checkpoint_every=1000)


@pytest.fixture(scope="module")
def watch_log(tiny_world):
    from livemind.rec.tokenizer.fit import fit_tokenizer

    _, data = tiny_world
    tok = fit_tokenizer(data, dataclasses.replace(FAST, epochs=1)).tokenizer
    return WatchLog.from_world(data, tok), tok, data


def test_watch_log_carries_the_sid_at_watch_time(watch_log):
    log, tok, data = watch_log
    frame = SegmentFrame.from_world(data)
    assert np.all(np.diff(log.viewer) >= 0)
    same = log.viewer[1:] == log.viewer[:-1]
    assert np.all(np.diff(log.time)[same] >= 0)
    from livemind.rec.data.watch import segment_codes

    codes = segment_codes(tok, frame)
    seg = frame.lookup(log.room, log.time)
    assert np.array_equal(log.sid, codes[seg])
    static = WatchLog.from_world(data, tok, static=True, codes=codes)
    first = frame.room_offset[np.searchsorted(frame.room_ids, static.room)]
    assert np.array_equal(static.sid, codes[first])
    row = int(np.flatnonzero(np.arange(len(log)) - log.first == 3)[0])  # a target with three earlier watches
    hist, target = log.batch(np.array([row]), max_history=8)
    assert hist.valid[0].tolist() == [False] * 5 + [True] * 3  # left-padded
    assert torch.equal(hist.codes[0, 5:], torch.from_numpy(log.sid[row - 3:row]))
    assert torch.equal(target[0], torch.from_numpy(log.sid[row]))


def test_training_lowers_loss_and_resume_is_exact(watch_log, tmp_path):
    log, _, _ = watch_log
    rows = log.examples(min_history=1)
    full = GeneratorTrainer(CFG, log, rows, tmp_path / "full")
    full.setup(resume=False)
    losses = full.train()
    steps = len(losses)
    assert steps >= 8 and np.mean(losses[-3:]) < np.mean(losses[:3])
    part = GeneratorTrainer(CFG, log, rows, tmp_path / "part")
    part.setup(resume=False)
    part.train(max_steps=steps // 2 + 1)
    part.save_checkpoint()
    resumed = GeneratorTrainer(CFG, log, rows, tmp_path / "part")
    resumed.setup(resume=True)
    assert resumed.global_step == steps // 2 + 1
    resumed.train()
    assert resumed.losses == losses
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_checkpoint_of_another_tokenizer_is_refused(watch_log, tmp_path):
    log, tok, _ = watch_log
    t = GeneratorTrainer(CFG, log, log.examples(min_history=1), tmp_path / "c")
    t.setup(resume=False)
    t.train(max_steps=2)
    t.save_checkpoint()
    assert load_generator(tmp_path / "c", tok.version).cfg == CFG.generator
    with pytest.raises(DataError, match="was trained on tokenizer .* the live index uses tok-other"):
        load_generator(tmp_path / "c", "tok-other")
    other = dataclasses.replace(log, tokenizer_version="tok-other")
    with pytest.raises(DataError, match="was trained on tokenizer .* the data is tokenised by tok-other"):
        GeneratorTrainer(CFG, other, log.examples(min_history=1), tmp_path / "c").setup(resume=True)


def test_semantic_codes_need_the_centroids_and_survive_a_checkpoint(watch_log, tmp_path):
    log, tok, _ = watch_log
    cfg = dataclasses.replace(CFG, generator=dataclasses.replace(CFG.generator, code_dim=tok.quantizer.dim))
    rows = log.examples(min_history=1)
    with pytest.raises(ValueError, match="code_dim > 0 needs the tokenizer's codebook centroids"):
        GeneratorTrainer(cfg, log, rows, tmp_path / "s")
    t = GeneratorTrainer(cfg, log, rows, tmp_path / "s", code_vectors=tok.quantizer.centroids)
    t.setup(resume=False)
    losses = t.train()
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    t.save_checkpoint()
    model = load_generator(tmp_path / "s", tok.version)
    assert torch.equal(model.code_vectors, torch.from_numpy(tok.quantizer.centroids))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), t.model.state_dict().values()))
    # the demo and the alignment cache resume only a checkpoint of the same architecture
    assert saved_generator_config(tmp_path / "s") == cfg.generator != CFG.generator
    assert saved_generator_config(tmp_path / "none") is None


def test_evaluation_metrics_on_popularity(watch_log):
    log, tok, data = watch_log
    frame = SegmentFrame.from_world(data)
    from livemind.rec.data.watch import segment_codes

    live = LiveRooms(data, frame, segment_codes(tok, frame), tok.version)
    rows = log.examples(start=float(np.quantile(log.time, 0.7)))[:150]
    m = evaluate(PopularityRanker(live), log, rows)
    assert m["all"]["n"] == len(rows) == m["new"]["n"] + m["repeat"]["n"]
    assert 0 < m["all"]["hr@1"] <= m["all"]["hr@5"] <= m["all"]["hr@10"] <= 1
    assert m["all"]["mrr"] >= m["all"]["hr@1"]
    for row in rows[:20]:  # every ranked room is live at the request time
        ranked = PopularityRanker(live).rank(log, int(row))
        assert set(ranked) == set(live.rooms(float(log.time[row])).tolist())


def test_history_at_takes_watches_before_the_request(watch_log):
    log, _, _ = watch_log
    later = np.r_[False, log.time[1:] > log.time[:-1]]  # strictly after the watch before it
    row = int(np.flatnonzero((np.arange(len(log)) - log.first >= 5) & later)[0])
    v, t = int(log.viewer[row]), float(log.time[row])
    hist = log.history_at(v, t, max_history=3)
    assert hist.codes.shape == (1, 3, log.sid.shape[1]) and bool(hist.valid.all())
    assert torch.equal(hist.codes[0], torch.from_numpy(log.sid[row - 3:row]))
    assert hist.now.item() == t
    cold = log.history_at(v, float(log.time[log.first[row]]), max_history=3)  # at the first watch: nothing before
    assert cold.codes.shape == (1, 0, log.sid.shape[1]) and cold.valid.shape == (1, 0)


def test_live_room_prior_trains_jointly_and_survives_a_checkpoint(tiny_world, tiny_rec, tmp_path):
    from livemind.rec.data.feedback import ViewerState
    from livemind.rec.data.room_signals import SIGNALS, RoomSignals

    _, world = tiny_world
    sig = RoomSignals(tiny_rec.log, ViewerState.from_world(world), tiny_rec.live)
    g = dataclasses.replace(CFG.generator, codebook_size=8, room_signals=len(SIGNALS))
    cfg = dataclasses.replace(CFG, generator=g, room_loss=1.0, epochs=3)
    with pytest.raises(ValueError, match="room_loss needs the live rooms' identity signals"):
        GeneratorTrainer(cfg, tiny_rec.log, tiny_rec.train_rows, tmp_path / "p")
    with pytest.raises(ValueError, match="generator.room_signals must be 0 or 5 .*, got 2"):
        dataclasses.replace(cfg, generator=dataclasses.replace(g, room_signals=2))
    with pytest.raises(ValueError, match="a generator with a live-room prior .* trains it by room_loss > 0"):
        dataclasses.replace(cfg, room_loss=0.0)
    with pytest.raises(ValueError, match="room_loss must be non-negative, got -1.0"):
        dataclasses.replace(cfg, room_loss=-1.0)
    with pytest.raises(ValueError, match="room_negatives must be at least 1, got 0"):
        dataclasses.replace(cfg, room_negatives=0)
    t = GeneratorTrainer(cfg, tiny_rec.log, tiny_rec.train_rows, tmp_path / "p", signals=sig)
    t.setup(resume=False)
    before = {k: v.clone() for k, v in t.model.room_prior.state_dict().items()}
    losses = t.train()
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert any(not torch.equal(before[k], v) for k, v in t.model.room_prior.state_dict().items())
    model = load_generator(tmp_path / "p", tiny_rec.log.tokenizer_version)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), t.model.state_dict().values()))
    # the trained prior alone already explains the watched rooms better than the initial one
    b = sig.batch(tiny_rec.train_rows)
    init = copy.deepcopy(model.room_prior)
    init.load_state_dict(before)

    def room_ce(prior: torch.nn.Module) -> float:
        with torch.no_grad():
            return F.cross_entropy(prior(b.signals)[..., 0].masked_fill(~b.mask, float("-inf")), b.target).item()

    assert room_ce(model.room_prior) < room_ce(init) - 0.01
    # refit on held-out rows with the generator frozen: the room cross-entropy there falls, nothing else moves
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("room_prior")}
    before, after = fit_room_prior(model, sig, tiny_rec.eval_rows, iterations=20)
    assert after < before
    assert all(torch.equal(frozen[k], v) for k, v in model.state_dict().items() if k in frozen and k != "log_lp_scale")
    # a weight of log P(SID) pushed far out (the demo's refit once stored e^-87.66) is refit within its range
    with torch.no_grad():
        model.log_lp_scale.fill_(-87.66)
    _, after = fit_room_prior(model, sig, tiny_rec.eval_rows, iterations=20)
    assert math.isfinite(after) and model.log_lp_scale.shape == (2,)  # a weight per SID level
    assert all(LOG_LP_WEIGHT_RANGE[0] <= x <= LOG_LP_WEIGHT_RANGE[1] for x in model.log_lp_scale.tolist())
    with pytest.raises(ValueError, match="has no live-room prior"):
        fit_room_prior(OneLiveGenerator(CFG.generator), sig, tiny_rec.eval_rows)


def test_a_refit_over_more_live_entries_than_its_cap_reads_a_seeded_sample_in_time_order(tiny_world, tiny_rec):
    from livemind.rec.data.feedback import ViewerState
    from livemind.rec.data.room_signals import RoomSignals

    _, world = tiny_world
    sig = RoomSignals(tiny_rec.log, ViewerState.from_world(world), tiny_rec.live)
    rows = tiny_rec.eval_rows
    live = {int(r): len(tiny_rec.live.rooms(float(tiny_rec.log.time[r]))) for r in rows}
    total = sum(live.values())
    assert list(refit_rows(sig, rows, total)) == list(rows)  # under the cap: every row
    cap = total // 3
    kept = refit_rows(sig, rows, cap)
    assert 0 < len(kept) < len(rows) and set(kept.tolist()) <= set(rows.tolist())
    assert list(kept) == sorted(kept) and sum(live[int(r)] for r in kept) <= cap
    assert sum(live[int(r)] for r in kept) > cap - max(live.values())  # as many as fit
    assert list(refit_rows(sig, rows, cap)) == list(kept)  # seeded
    assert len(refit_rows(sig, rows, 1)) == 1  # never empty


def test_a_finished_refit_checkpoint_is_reused_without_training_or_refitting(tiny_world, tiny_rec, tmp_path):
    from livemind.rec.data.feedback import ViewerState
    from livemind.rec.data.room_signals import SIGNALS, RoomSignals
    from livemind.rec.model.train import train_generator

    _, world = tiny_world
    sig = RoomSignals(tiny_rec.log, ViewerState.from_world(world), tiny_rec.live)
    g = dataclasses.replace(CFG.generator, codebook_size=8, room_signals=len(SIGNALS))
    cfg = dataclasses.replace(CFG, generator=g, room_loss=1.0, epochs=1, prior_holdout_hours=0.5)
    first = train_generator(cfg, tiny_rec.log, tiny_rec.train_rows, tmp_path / "p", signals=sig)
    assert first.samples > 0 and first.prior_fit[1] < first.prior_fit[0]
    again = train_generator(cfg, tiny_rec.log, tiny_rec.train_rows, tmp_path / "p", signals=sig)
    assert again.samples == 0 and again.prior_fit == first.prior_fit  # read back from the checkpoint
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))
    longer = train_generator(dataclasses.replace(cfg, epochs=2), tiny_rec.log, tiny_rec.train_rows, tmp_path / "p",
                             signals=sig)
    assert longer.samples > 0 and longer.prior_fit != first.prior_fit  # trained further: refit again


def test_a_generator_without_a_prior_learns_to_rank_the_live_rooms_by_log_p_sid(tiny_world, tiny_rec, tmp_path):
    """room_loss without a prior: the softmax over the rooms live at each target's time is scored by
    log P(SID) alone; training lowers that room cross-entropy, and nothing is held out or refit."""
    from livemind.rec.data.feedback import ViewerState
    from livemind.rec.data.room_signals import RoomSignals
    from livemind.rec.model.train import train_generator

    _, world = tiny_world
    sig = RoomSignals(tiny_rec.log, ViewerState.from_world(world), tiny_rec.live)
    g = dataclasses.replace(CFG.generator, codebook_size=8)
    cfg = dataclasses.replace(CFG, generator=g, room_loss=1.0, epochs=3)
    b = sig.batch(tiny_rec.train_rows)
    hist, _ = tiny_rec.log.batch(tiny_rec.train_rows, g.max_history)

    def room_ce(model: OneLiveGenerator) -> float:
        with torch.no_grad():
            scores = model.room_scores(hist, b.codes, b.signals).masked_fill(~b.mask, float("-inf"))
            return F.cross_entropy(scores, b.target).item()

    torch.manual_seed(cfg.seed)
    init = OneLiveGenerator(g)
    res = train_generator(cfg, tiny_rec.log, tiny_rec.train_rows, tmp_path / "r", signals=sig)
    assert res.prior_fit is None and res.samples == len(tiny_rec.train_rows) // cfg.batch_size * cfg.batch_size * 3
    assert np.mean(res.losses[-3:]) < np.mean(res.losses[:3])
    assert room_ce(res.model) < room_ce(init) - 0.05
    with pytest.raises(ValueError, match="room_loss needs the live rooms' identity signals"):
        GeneratorTrainer(cfg, tiny_rec.log, tiny_rec.train_rows, tmp_path / "x")


def test_the_prior_is_refit_on_the_last_hours_or_at_least_a_share_of_the_latest_targets(watch_log):
    """A few dozen held-out targets overfit the refit (the demo world's last 6 hours held 61 of 6,216):
    the holdout is the last `prior_holdout_hours` or the latest `prior_holdout_share`, whichever holds more."""
    from livemind.rec.data.room_signals import SIGNALS
    from livemind.rec.model.train import prior_holdout

    log, _, _ = watch_log
    rows = log.examples(min_history=1)
    t = log.time[rows]
    g = dataclasses.replace(CFG.generator, room_signals=len(SIGNALS))
    prior = dataclasses.replace(CFG, generator=g, room_loss=1.0)
    span = (t.max() - t.min()) / 3600.0
    kept, held = prior_holdout(dataclasses.replace(prior, prior_holdout_hours=1e-6, prior_holdout_share=0.25), log, rows)
    assert len(kept) + len(held) == len(rows) and not set(kept) & set(held)
    assert len(held) == int((t >= np.quantile(t, 0.75, method="higher")).sum())
    assert 0.2 * len(rows) <= len(held) <= 0.3 * len(rows)
    assert t[np.isin(rows, held)].min() >= t[np.isin(rows, kept)].max()  # the latest ones, by time
    kept, held = prior_holdout(dataclasses.replace(prior, prior_holdout_hours=span * 0.9, prior_holdout_share=0.01),
                               log, rows)
    assert np.array_equal(held, rows[t >= t.max() - span * 0.9 * 3600.0])  # the hours hold more: the hours
    assert len(held) > 0.5 * len(rows)
    kept, held = prior_holdout(dataclasses.replace(CFG, room_loss=1.0), log, rows)  # no prior: nothing held out
    assert np.array_equal(kept, rows) and len(held) == 0
    with pytest.raises(ValueError, match="prior_holdout_share must be in"):
        dataclasses.replace(prior, prior_holdout_share=1.0)
    with pytest.raises(ValueError, match="prior_refit_entries must be >= 1, got 0"):
        dataclasses.replace(prior, prior_refit_entries=0)


def test_a_checkpoint_is_resumed_only_under_the_same_training_settings(watch_log, tmp_path):
    from livemind.rec.model.train import same_training

    log, _, _ = watch_log
    rows = log.examples(min_history=1)
    cfg = dataclasses.replace(CFG, epochs=1)
    assert not same_training(tmp_path / "g", cfg)  # nothing there
    trainer = GeneratorTrainer(cfg, log, rows, tmp_path / "g")
    trainer.setup(resume=False)
    trainer.train(max_steps=1)
    trainer.save_checkpoint()
    assert same_training(tmp_path / "g", cfg)
    assert not same_training(tmp_path / "g", dataclasses.replace(cfg, prior_holdout_share=0.2))
    assert not same_training(tmp_path / "g", dataclasses.replace(cfg, prior_refit_entries=1000))
    assert not same_training(tmp_path / "g", dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, d_model=32)))
