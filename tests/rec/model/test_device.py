"""Device-correct code: every tensor the generator, beam search, prior refit, training and alignment
create lands on the model's device.

A CPU-only machine cannot run a GPU, so the test poisons the *default* device instead: with
`torch.set_default_device("meta")`, any tensor made without an explicit device (or moved from
numpy without `.to(model.device)`) lands on `meta`, and mixing it with the model's CPU tensors
fails at once. The same code then runs unchanged with the model on a GPU.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from livemind.rec.alignment.align import AlignConfig, align
from livemind.rec.alignment.reward_model import RewardModelConfig, train_reward_model
from livemind.rec.data.feedback import Impressions, ViewerState
from livemind.rec.data.room_signals import SIGNALS, RoomSignals
from livemind.rec.model.beam import recommend
from livemind.rec.model.generator import GeneratorConfig, OneLiveGenerator
from livemind.rec.model.prior import fit_room_prior
from livemind.rec.model.train import GeneratorTrainer, TrainConfig

GEN = GeneratorConfig(levels=2, codebook_size=8, d_model=16, n_heads=2, n_layers=1, max_history=5,
                      code_dim=4, room_signals=len(SIGNALS))


@contextmanager
def poisoned_default_device():
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


def test_the_poison_catches_a_tensor_made_without_the_models_device():
    model = OneLiveGenerator(GEN)
    with poisoned_default_device(), pytest.raises((RuntimeError, NotImplementedError)):
        model.bos + torch.zeros(16)  # what a forgotten device= would do


@pytest.fixture(scope="module")
def world_parts(tiny_world, tiny_rec):
    _, world = tiny_world
    state = ViewerState.from_world(world)
    signals = RoomSignals(tiny_rec.log, state, tiny_rec.live, GEN.signals)
    centroids = torch.randn(2, 8, 4, generator=torch.Generator().manual_seed(0))
    return state, signals, centroids


def test_forward_beam_search_and_prior_refit_make_nothing_off_the_model_device(tiny_rec, world_parts):
    _, signals, centroids = world_parts
    torch.manual_seed(0)
    model = OneLiveGenerator(GEN).eval()
    model.set_code_vectors(centroids)
    rows = tiny_rec.eval_rows[:4]
    hist, target = tiny_rec.log.batch(rows, 5)
    row = int(rows[0])
    snap = tiny_rec.live.snapshot(float(tiny_rec.log.time[row]))
    one, _ = tiny_rec.log.batch(np.array([row]), 5)
    with poisoned_default_device():
        logits = model(hist, target)
        recs = recommend(model, one, snap, top_k=3, beam=4, signals=signals.for_row(row, snap.rooms))
        before, after = fit_room_prior(model, signals, tiny_rec.train_rows[:64], iterations=3)
    assert [lg.device.type for lg in logits] == ["cpu", "cpu"]
    assert len(recs) == 3 and all(r in set(snap.rooms.tolist()) for r, _ in recs)
    assert after <= before


@pytest.mark.slow
def test_a_training_step_and_an_alignment_step_make_nothing_off_the_model_device(tiny_world, tiny_rec, world_parts,
                                                                                   tmp_path):
    state, signals, centroids = world_parts
    _, world = tiny_world
    cfg = TrainConfig(generator=GEN, epochs=1, batch_size=8, room_loss=1.0, live_softmax=True)
    trainer = GeneratorTrainer(cfg, tiny_rec.log, tiny_rec.train_rows, tmp_path / "gen", live=tiny_rec.live,
                               code_vectors=centroids.numpy(), signals=signals)
    trainer.setup(resume=False)
    trainer.train(max_steps=1)  # torch's AdamW keeps its step counts on the default device by design: made here
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with poisoned_default_device():
        trainer.train(max_steps=2)
    assert trainer.global_step == 3 and len(tiny_rec.train_rows) // 8 > 3  # no end-of-epoch checkpoint in between
    assert trainer.model.device.type == "cpu"
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())

    imp = Impressions.from_world(world, tiny_rec.frame, tiny_rec.codes, "test-v1", state)
    torch.manual_seed(0)  # the reward model of tests/rec/alignment/test_align.py
    rm, _ = train_reward_model(RewardModelConfig(epochs=6, batch_size=256, history=5, lr=1e-2),
                               imp.take(np.flatnonzero(imp.time < tiny_rec.split)), tiny_rec.log,
                               world.viewers.num_rows, world.streamers.num_rows, 8)
    acfg = dataclasses.replace(AlignConfig(), steps=2, batch_size=8)
    with poisoned_default_device():
        res = align(acfg, trainer.model.eval(), rm, state, tiny_rec.log, tiny_rec.live, tiny_rec.train_rows)
    assert len(res.history) == 2 and np.isfinite(res.history[-1]["loss"])
