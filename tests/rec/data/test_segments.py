import numpy as np

from livemind.rec.data.segments import SegmentFrame


def brute_lookup(frame: SegmentFrame, room: int, t: float) -> int:
    """The segment room `room` showed at t, by scanning: its last segment starting at or before t,
    while the room has not ended; -1 otherwise."""
    rows = np.flatnonzero((frame.room == room) & (frame.start_time <= t))
    if not len(rows):
        return -1
    end = frame.room_end[np.searchsorted(frame.room_ids, room)]
    return int(rows[np.argmax(frame.start_time[rows])]) if t < end else -1


def test_lookup_matches_a_scan_inside_and_outside_the_world(tiny_world):
    _, world = tiny_world
    frame = SegmentFrame.from_world(world)
    rng = np.random.default_rng(0)
    lo, hi = float(frame.start_time.min()), float(frame.room_end.max())
    rooms = np.r_[rng.choice(frame.room_ids, 300), [10**6, -1, 10**6]]  # and rooms that do not exist
    times = np.r_[rng.uniform(lo - 7200, hi + 7200, 300), [lo, hi + 1e6, lo - 1e6]]
    # exact segment starts and room ends are edges: a segment is on screen from its start, a room ends before its end
    starts = rng.choice(len(frame), 50)
    rooms = np.r_[rooms, frame.room[starts]]
    times = np.r_[times, frame.start_time[starts]]
    got = frame.lookup(rooms, times)
    want = np.array([brute_lookup(frame, r, t) for r, t in zip(rooms.tolist(), times.tolist())])
    assert np.array_equal(got, want)
    assert np.array_equal(got[-50:], starts) or np.all(frame.start_time[got[-50:]] == frame.start_time[starts])
    assert np.all(got[300:303] == -1) and 0 < np.sum(got[:300] >= 0) < 300  # both kinds occur
    assert np.array_equal(frame.lookup(rooms, times), got)  # the cached key gives the same answers again
