"""A room's score is w x log P(SID) + its prior, finite and in a float64 reference's order for any
weight w the model could hold, with nothing divided by w (a weight near 0 once overflowed it)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from livemind.rec.live.index import LiveIndex
from livemind.rec.model.beam import constrained_beam_search, prefix_bonus, recommend, rooms_from_sids
from livemind.rec.model.generator import LOG_LP_WEIGHT_RANGE, GeneratorConfig, OneLiveGenerator
from livemind.rec.model.prior import generator_share
from tests.rec.model.test_generator import make_history

K, L = 6, 3


class TableScorer:
    """Log-probabilities per prefix drawn once from a seeded generator (a model's stand-in)."""

    def __init__(self, seed: int, spread: float) -> None:
        self.rng, self.spread, self.table = np.random.default_rng(seed), spread, {}
        self.prefixes: list[tuple[int, ...]] = []

    def lp(self, prefix: tuple[int, ...]) -> np.ndarray:
        if prefix not in self.table:
            x = self.rng.normal(size=K) * self.spread
            self.table[prefix] = (x - np.log(np.exp(x - x.max()).sum()) - x.max()).astype(np.float32)
        return self.table[prefix]

    def start(self) -> np.ndarray:
        self.prefixes = [()]
        return self.lp(())[None]

    def extend(self, parents: np.ndarray, codes: np.ndarray) -> np.ndarray:
        self.prefixes = [(*self.prefixes[p], int(c)) for p, c in zip(parents, codes)]
        return np.stack([self.lp(p) for p in self.prefixes])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(*[st.integers(0, K - 1)] * L), min_size=1, max_size=30),
       st.floats(-88.0, 88.0), st.integers(0, 10_000), st.floats(0.0, 30.0),
       st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=30, max_size=30))
def test_scores_are_finite_and_in_float64_reference_order_for_any_weight(sids, log_w, seed, spread, priors):
    idx = LiveIndex(L, "v")
    for room, sid in enumerate(sids):
        idx.upsert(room, sid)
    snap = idx.snapshot()
    prior = np.asarray(priors[:len(snap.rooms)], dtype=np.float32)  # a model's prior is float32
    w = math.exp(log_w)
    scorer = TableScorer(seed, spread)
    n_sids = len(set(sids))
    found, scores = constrained_beam_search(scorer, snap, beam=n_sids, bonus=prefix_bonus(snap, prior), weight=w)
    ranked = rooms_from_sids(snap, found, scores, top_k=len(snap.rooms), prior=prior)
    assert all(math.isfinite(s) for _, s in ranked)
    want = []  # the reference: every live room, w x log P summed level by level in float64, + its prior
    for room, sid, p in zip(snap.rooms.tolist(), snap.codes.tolist(), prior.tolist()):
        s = 0.0
        for level in range(L):
            s += w * float(scorer.table[tuple(sid[:level])][sid[level]])
        want.append((room, s + p))
    want.sort(key=lambda rs: (-rs[1], rs[0]))
    assert ranked == want


def test_a_weight_that_is_not_positive_and_finite_is_refused():
    idx = LiveIndex(L, "v")
    idx.upsert(0, (1, 2, 3))
    for w in (0.0, -1.0, math.inf, math.nan, [1.0, 1.0], [1.0, math.nan, 1.0]):
        with pytest.raises(ValueError, match="positive finite number"):
            constrained_beam_search(TableScorer(0, 1.0), idx.snapshot(), beam=4, weight=w)


def _twelve_live_rooms(model: OneLiveGenerator, seed: int) -> tuple:
    """(snapshot of 12 live rooms with random 3-level SIDs, their signals (12, 4), one history, the
    model's top 12 of them by beam search)."""
    rng = np.random.default_rng(seed)
    idx = LiveIndex(3, "v")
    for room in range(12):
        idx.upsert(room, tuple(int(c) for c in rng.integers(0, 8, 3)))
    snap = idx.snapshot()
    sig = rng.normal(size=(12, 4)).astype(np.float32)
    hist = make_history(1, 6, 8)
    recs = recommend(model, hist, snap, top_k=12, beam=12, signals=sig)
    return snap, sig, hist, recs


@pytest.mark.parametrize("log_scale", [-87.66, -1e6, 88.0, 1e6])
def test_a_generator_whose_stored_weight_left_its_range_still_scores_finitely_and_in_order(log_scale):
    """The demo's refit once stored log_lp_scale = -87.66: every room scored +inf, then null."""
    torch.manual_seed(0)
    model = OneLiveGenerator(GeneratorConfig(d_model=16, n_heads=2, n_layers=2, codebook_size=8,
                                             room_signals=4)).eval()
    with torch.no_grad():
        model.log_lp_scale.fill_(log_scale)
    assert model.lp_weight().shape == (3,)
    w = model.lp_weight()[0].item()
    assert model.lp_weight().tolist() == [w] * 3
    assert w == pytest.approx(math.exp(min(max(log_scale, LOG_LP_WEIGHT_RANGE[0]), LOG_LP_WEIGHT_RANGE[1])))
    snap, sig, hist, recs = _twelve_live_rooms(model, seed=1)
    with torch.no_grad():
        exact = model.room_scores(hist, torch.from_numpy(snap.codes)[None], torch.from_numpy(sig)[None])[0].double()
    assert all(math.isfinite(s) for _, s in recs)
    assert [s for _, s in recs] == sorted((s for _, s in recs), reverse=True)
    assert np.allclose([s for _, s in recs], sorted(exact.tolist(), reverse=True), rtol=1e-5, atol=1e-4)
    share = generator_share(model)
    assert ("the prior ranks alone" in share) == (log_scale < LOG_LP_WEIGHT_RANGE[0])


def test_a_weight_per_level_ranks_as_the_exact_room_scores_and_an_old_scalar_weight_loads(tmp_path):
    from livemind.rec.model.checkpoint import load_generator, save_generator

    torch.manual_seed(0)
    model = OneLiveGenerator(GeneratorConfig(d_model=16, n_heads=2, n_layers=2, codebook_size=8, room_signals=4)).eval()
    with torch.no_grad():
        model.log_lp_scale.copy_(torch.tensor([0.5, -3.0, -8.0]))
    snap, sig, hist, recs = _twelve_live_rooms(model, seed=2)
    with torch.no_grad():
        lp = model.sid_level_log_probs(hist, torch.from_numpy(snap.codes)[None])[0].double()
        exact = model.room_scores(hist, torch.from_numpy(snap.codes)[None], torch.from_numpy(sig)[None])[0].double()
    w = torch.tensor([0.5, -3.0, -8.0], dtype=torch.float64).exp()
    prior = model.live_prior(hist, torch.from_numpy(snap.codes)[None], torch.from_numpy(sig)[None])[0].double()
    assert torch.allclose(exact, (lp * w).sum(-1) + prior, atol=1e-5)  # Σ_l w_l log P(level l | before) + prior
    assert [r for r, _ in recs] == [int(snap.rooms[i]) for i in np.lexsort((snap.rooms, -exact.numpy()))]
    # a checkpoint saved when one weight served every level loads with that weight at each level
    save_generator(model, tmp_path / "g", "v")
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(tmp_path / "g" / "model.safetensors"))
    tensors["log_lp_scale"] = torch.tensor(-2.0)
    save_file(tensors, str(tmp_path / "g" / "model.safetensors"))
    assert load_generator(tmp_path / "g", "v").log_lp_scale.tolist() == [-2.0] * 3
