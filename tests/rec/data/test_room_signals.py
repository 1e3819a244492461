import numpy as np
import pytest
import torch

from livemind.rec.data.feedback import ViewerState
from livemind.rec.data.room_signals import SIGNALS, RoomSignals, SignalConfig


@pytest.fixture(scope="module")
def signals(tiny_world, tiny_rec):
    _, world = tiny_world
    return RoomSignals(tiny_rec.log, ViewerState.from_world(world), tiny_rec.live)


def test_signals_count_the_log_before_the_request(tiny_rec, signals):
    log, live = tiny_rec.log, tiny_rec.live
    row = int(tiny_rec.eval_rows[len(tiny_rec.eval_rows) // 2])
    v, t = int(log.viewer[row]), float(log.time[row])
    rooms, codes, sig = signals.at_row(row)
    assert sig.shape == (len(rooms), len(SIGNALS)) and sig.dtype == np.float32
    assert np.array_equal(codes, live.live_codes(t)) and int(log.room[row]) in rooms
    recent = (log.time >= t - 3600) & (log.time < t)
    for j, room in enumerate(rooms):
        s = int(live.streamer_of(np.array([room]))[0])
        assert sig[j, 0] == pytest.approx(np.log1p(np.sum(recent & (log.room == room))))
        assert sig[j, 1] == pytest.approx(np.log1p(signals.state.watches(np.array([v]), np.array([s]), t)[0]))
        assert sig[j, 3] == float(row > log.first[row] and s == log.streamer[row - 1])
        # topic share: the viewer's last 30 watches before the row, each with its segment's topic then
        frame = live.frame
        now = frame.topic[frame.lookup(np.array([room]), np.array([t]))[0]]
        past = range(max(int(log.first[row]), row - 30), row)
        then = [frame.topic[frame.lookup(log.room[[h]], log.time[[h]])[0]] for h in past]
        assert sig[j, 4] == pytest.approx(np.mean([x == now for x in then]) if then else 0.0)
    assert set(np.unique(sig[:, 2])) <= {0.0, 1.0}
    shares = signals.batch(tiny_rec.eval_rows[:50]).signals[..., 4]
    assert 0 < shares.max() <= 1.0  # some live rooms show a topic their viewer watched before
    # the same request made by viewer and time (what serving does) reads the same log rows
    assert row == log.first[row] or log.time[row - 1] < t
    assert np.array_equal(signals.for_request(v, t, rooms), sig)


def test_a_viewer_without_history_has_no_familiarity_last_or_topic_share(tiny_rec, signals):
    log = tiny_rec.log
    row = int(np.flatnonzero(np.arange(len(log)) == log.first)[len(log.first) // 3])  # a viewer's first watch
    rooms, _, sig = signals.at_row(row)
    assert np.all(sig[:, [1, 3, 4]] == 0.0)
    with pytest.raises(ValueError, match="history must be at least 1 watch, got 0"):
        SignalConfig(history=0)


def test_audience_is_exact_at_the_window_edges(tiny_rec, signals):
    log = tiny_rec.log
    room = int(log.room[0])
    times = np.sort(log.time[log.room == room])
    t = float(times[0])
    # a watch at t itself is not before t; one exactly `window` seconds earlier is inside it
    assert signals.audience(np.array([room]), t)[0] == 0
    assert signals.audience(np.array([room]), t + 3600.0)[0] == np.sum((times >= t) & (times < t + 3600.0))
    with pytest.raises(ValueError, match="window must be positive, got 0"):
        SignalConfig(window=0.0)


def test_batch_pads_and_points_at_the_watched_room(tiny_rec, signals):
    rows = tiny_rec.eval_rows[:6]
    b = signals.batch(rows)
    assert b.codes.shape[:2] == b.mask.shape == b.signals.shape[:2] and b.signals.shape[2] == len(SIGNALS)
    for i, row in enumerate(rows):
        rooms, _, sig = signals.at_row(int(row))
        n = len(rooms)
        assert b.mask[i].sum() == n and np.array_equal(b.rooms[i, :n], rooms) and np.all(b.rooms[i, n:] == -1)
        assert torch.equal(b.signals[i, :n], torch.from_numpy(sig))
        assert b.rooms[i, int(b.target[i])] == tiny_rec.log.room[row]


def test_sampled_negatives_keep_the_watched_room(tiny_rec, signals):
    rows = tiny_rec.eval_rows[:8]
    full = signals.batch(rows)
    b = signals.batch(rows, negatives=2, rng=np.random.default_rng(5))
    again = signals.batch(rows, negatives=2, rng=np.random.default_rng(5))
    assert np.array_equal(b.rooms, again.rooms)  # the same generator state draws the same rooms
    for i, row in enumerate(rows):
        kept = b.rooms[i][b.rooms[i] >= 0]
        assert len(kept) == min(3, int(full.mask[i].sum())) and tiny_rec.log.room[row] in kept
        assert set(kept) <= set(full.rooms[i].tolist()) and np.all(np.diff(kept) > 0)
        assert b.rooms[i, int(b.target[i])] == tiny_rec.log.room[row]
        j = np.searchsorted(full.rooms[i][full.mask[i].numpy()], kept)
        assert torch.equal(b.signals[i, :len(kept)], full.signals[i, j])
