"""Every live room scored (`livemind.rec.model.exact`): each room's score is the model's own
Σ_l w_l log P(level l | before) + prior, computed once per distinct SID prefix, and it ranks as a
beam wide enough to keep every SID does."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from livemind.rec.model.beam import recommend, recommend_batch
from livemind.rec.model.exact import live_room_scores, sid_prefixes
from tests.rec.model.test_generator import _snapshot, make_history, prior_model, small_model


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[st.integers(0, 3)] * 4), min_size=1, max_size=40))
def test_each_prefix_is_indexed_once_with_its_parent_and_last_code(sids):
    codes = np.array(sids, dtype=np.int64)
    pre = sid_prefixes(codes)
    assert len(pre.of_room) == 3  # prefixes of length 1..L-1
    for m in range(1, 4):
        distinct = sorted({tuple(s[:m]) for s in sids})
        idx, parent, code = pre.of_room[m - 1], pre.parent[m - 1], pre.code[m - 1]
        assert len(code) == len(parent) == len(distinct)
        assert sorted({tuple(s[:m]): int(i) for s, i in zip(sids, idx)}.values()) == list(range(len(distinct)))
        for s, i in zip(sids, idx):  # rooms share an index exactly when they share the prefix
            assert all((tuple(t[:m]) == tuple(s[:m])) == (j == i) for t, j in zip(sids, idx))
            assert code[i] == s[m - 1]
            assert parent[i] == (0 if m == 1 else pre.of_room[m - 2][sids.index(s)])


@pytest.mark.parametrize("decode, code_dim, with_prior", [("mtp", 0, False), ("mtp", 4, True), ("ar", 0, True),
                                                          ("ar", 0, False)])
def test_every_room_gets_the_models_own_room_score(decode, code_dim, with_prior):
    model = prior_model(decode, code_dim) if with_prior else small_model(decode, code_dim)
    rng = np.random.default_rng(3)
    snaps = [_snapshot([tuple(int(c) for c in rng.integers(0, 8, 3)) for _ in range(n)], 3) for n in (17, 1, 0, 6)]
    hists = [make_history(1, T, 8, seed=T) for T in (4, 0, 2, 9)]
    sigs = [rng.normal(size=(len(s.rooms), 4)).astype(np.float32) for s in snaps]
    priors = []
    for h, s, g in zip(hists, snaps, sigs):
        with torch.no_grad():
            priors.append(model.live_prior(h, torch.from_numpy(s.codes)[None], torch.from_numpy(g)[None])[0].numpy()
                          if with_prior and len(s.rooms) else None)
    got = live_room_scores(model, hists, snaps, priors)
    assert [len(g) for g in got] == [17, 1, 0, 6]
    for h, s, g, x in zip(hists, snaps, sigs, got):
        if not len(s.rooms):
            continue
        with torch.no_grad():
            want = model.room_scores(h, torch.from_numpy(s.codes)[None], torch.from_numpy(g)[None])[0].double()
        assert x.dtype == np.float64 and np.isfinite(x).all()
        assert np.allclose(x, want.numpy(), rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(*[st.integers(0, 7)] * 3), min_size=1, max_size=30), st.integers(0, 50))
def test_scoring_every_room_ranks_as_a_beam_that_keeps_every_sid_and_never_below_a_narrow_one(sids, T):
    model = prior_model("mtp", 4)
    snap = _snapshot(sids, 3)
    sig = np.random.default_rng(T).normal(size=(len(snap.rooms), 4)).astype(np.float32)
    hist = make_history(1, T % 12, 8, seed=T)
    n = len(snap.rooms)
    exact = recommend(model, hist, snap, top_k=n, beam=8, signals=sig, exact_up_to=n)
    wide = recommend(model, hist, snap, top_k=n, beam=len(set(sids)), signals=sig, exact_up_to=0)
    assert [r for r, _ in exact] == [r for r, _ in wide]
    assert np.allclose([s for _, s in exact], [s for _, s in wide], rtol=1e-6, atol=1e-5)
    narrow = recommend(model, hist, snap, top_k=3, beam=2, signals=sig, exact_up_to=0)
    assert narrow[0][1] <= exact[0][1] + 1e-5  # the beam may prune the best room, scoring every room may not


def test_a_batch_scores_its_small_snapshots_exactly_and_searches_the_large_ones():
    model = prior_model("mtp", 4)
    rng = np.random.default_rng(5)
    small = _snapshot([tuple(int(c) for c in rng.integers(0, 8, 3)) for _ in range(5)], 3)
    large = _snapshot([tuple(int(c) for c in rng.integers(0, 8, 3)) for _ in range(30)], 3)
    hists = [make_history(1, 6, 8, seed=1), make_history(1, 6, 8, seed=2)]
    sigs = [rng.normal(size=(len(s.rooms), 4)).astype(np.float32) for s in (small, large)]
    got = recommend_batch(model, hists, [small, large], top_k=5, beam=1, signals=sigs, exact_up_to=5)
    wide = recommend(model, hists[0], small, top_k=5, beam=30, signals=sigs[0], exact_up_to=0)
    assert [r for r, _ in got[0]] == [r for r, _ in wide]  # 5 rooms, all scored: as a beam that keeps them all
    assert np.allclose([s for _, s in got[0]], [s for _, s in wide], atol=1e-5)
    beam1 = recommend(model, hists[1], large, top_k=5, beam=1, signals=sigs[1], exact_up_to=0)
    assert [r for r, _ in got[1]] == [r for r, _ in beam1]  # a beam of 1: the search, not every room
    every = recommend(model, hists[1], large, top_k=5, signals=sigs[1], exact_up_to=30)
    assert [r for r, _ in every] != [r for r, _ in beam1]
