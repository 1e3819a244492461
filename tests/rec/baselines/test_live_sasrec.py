import dataclasses

import numpy as np
import pytest

from livemind.errors import DataError
from livemind.rec.baselines.live_sasrec import SASRecRanker, live_negatives, train_live_sasrec, viewer_sequences
from livemind.rec.baselines.popularity import PopularityRanker
from livemind.rec.baselines.sasrec import SASRecConfig, pad_left
from livemind.rec.data.prepare import prepare
from livemind.rec.eval.offline import evaluate
from tests.conftest import TINY
from tests.rec.tokenizer.test_tokenizer import FAST

SPLIT = TINY.start_time + 16 * 3600


@pytest.fixture(scope="module")
def rec_data(tiny_world):
    from livemind.rec.tokenizer.fit import fit_tokenizer

    _, world = tiny_world
    tok = fit_tokenizer(world, dataclasses.replace(FAST, epochs=1, train_until=SPLIT)).tokenizer
    data = prepare(world, tok, SPLIT, n_eval=150, seed=0)
    data.tokenizer = tok  # for tests that prepare again
    return data


def test_prepare_splits_targets_in_time(rec_data):
    d = rec_data
    assert np.all(d.log.time[d.train_rows] < SPLIT) and np.all(d.log.time[d.eval_rows] >= SPLIT)
    assert len(d.eval_rows) == 150 and np.all(np.diff(d.eval_rows) > 0)
    assert np.all(d.train_rows - d.log.first[d.train_rows] >= 1)  # every training target has a history
    with pytest.raises(DataError, match="no watch after the split time"):
        prepare(d.world, d.tokenizer, TINY.end_time + 1)


def test_viewer_sequences_follow_the_log(rec_data):
    log = rec_data.log
    items, times = viewer_sequences(log, SPLIT)
    keep = log.time < SPLIT
    assert sum(len(s) for s in items) == int(keep.sum())
    assert np.array_equal(np.concatenate(items), log.streamer[keep] + 1)
    assert all(np.all(np.diff(t) >= 0) for t in times)


def test_live_negatives_are_live_at_the_target_time(rec_data):
    d = rec_data
    items, times = viewer_sequences(d.log, SPLIT)
    padded = pad_left(times, 9, np.float64)
    sampler = live_negatives(d.live, padded, step=300.0)
    rows = np.arange(len(items))
    pos = pad_left(items, 9)[:, 1:]
    rng = np.random.default_rng(0)
    neg = sampler(rng, pos, rows)
    t = padded[:, 1:]
    real = pos > 0
    assert not np.any((neg == pos) & real)
    # every negative is a streamer live in its target's 5-minute slot, unless only the positive was live
    t0 = padded[padded > 0].min()
    for b, j in zip(*np.nonzero(real)):
        live = set((d.live.streamer_of(d.live.rooms(t0 + 300.0 * ((t[b, j] - t0) // 300.0))) + 1).tolist())
        assert neg[b, j] in live or live <= {pos[b, j]}


def test_sasrec_rankers_rank_only_live_rooms_and_train(rec_data):
    d = rec_data
    cfg = SASRecConfig(n_items=d.world.streamers.num_rows, d_model=16, max_len=10, dropout=0.1, epochs=4,
                       batch_size=32, lr=5e-3)
    for aware in (False, True):
        model, losses = train_live_sasrec(d.log, d.live, SPLIT, dataclasses.replace(cfg, repeat_aware=aware), aware)
        assert losses[-1] < losses[0]
        ranker = SASRecRanker(model, d.live)
        for row in d.eval_rows[:20]:
            ranked = ranker.rank(d.log, int(row))
            assert sorted(ranked) == d.live.rooms(float(d.log.time[row])).tolist()
    cold = int(np.flatnonzero(np.arange(len(d.log)) == d.log.first)[0])  # a viewer's first watch: no history
    assert sorted(ranker.rank(d.log, cold)) == d.live.rooms(float(d.log.time[cold])).tolist()
    res = evaluate(ranker, d.log, d.eval_rows)
    pop = evaluate(PopularityRanker(d.live), d.log, d.eval_rows)
    assert res["all"]["n"] == pop["all"]["n"] == 150
    assert res["new"]["n"] + res["repeat"]["n"] == 150


def test_allowed_codes_follow_the_target_prefix_among_live_rooms(rec_data):
    d = rec_data
    rows = d.train_rows[:40]
    target = d.log.sid[rows]
    allowed = d.live.allowed(d.log.time[rows], target, 16)
    assert allowed.shape == (40, 2, 16)
    for b, row in enumerate(rows):
        codes = d.live.live_codes(float(d.log.time[row]))
        assert set(np.flatnonzero(allowed[b, 0])) == set(codes[:, 0].tolist())
        assert set(np.flatnonzero(allowed[b, 1])) == set(codes[codes[:, 0] == target[b, 0], 1].tolist())
        assert allowed[b, 0, target[b, 0]] and allowed[b, 1, target[b, 1]]  # the watched room was live
