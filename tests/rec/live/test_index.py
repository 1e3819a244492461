import threading

import numpy as np
import pytest

from livemind.errors import DataError
from livemind.rec.live.index import LiveIndex


def test_upsert_remove_and_prefix_tables():
    idx = LiveIndex(3, "tok-a")
    idx.upsert(10, (1, 2, 3))
    idx.upsert(11, (1, 2, 4))
    idx.upsert(12, (5, 0, 0))
    snap = idx.snapshot()
    assert snap.rooms.tolist() == [10, 11, 12]
    assert snap.allowed_next(()).tolist() == [1, 5]
    assert snap.allowed_next((1,)).tolist() == [2]
    assert snap.allowed_next((1, 2)).tolist() == [3, 4]
    assert snap.allowed_next((9,)).tolist() == []
    idx.upsert(10, (5, 0, 1))  # a new segment moves room 10
    idx.remove(12)  # room 12 ends
    snap2 = idx.snapshot()
    assert snap2.allowed_next(()).tolist() == [1, 5]
    assert snap2.allowed_next((1, 2)).tolist() == [4]
    assert snap2.rooms_for((5, 0, 1)) == (10,) and snap2.rooms_for((5, 0, 0)) == ()
    assert snap.allowed_next((1, 2)).tolist() == [3, 4]  # an earlier snapshot does not change
    assert idx.sid_of(10) == (5, 0, 1) and idx.sid_of(12) is None


def test_collisions_keep_every_room_reachable():
    idx = LiveIndex(2, "v")
    for room in (3, 1, 2):
        idx.upsert(room, (7, 7))
    idx.upsert(4, (7, 8))
    snap = idx.snapshot()
    assert snap.rooms_for((7, 7)) == (3, 1, 2)  # oldest first
    assert snap.collision_rate() == 0.75


def test_bad_updates_leave_the_index_unchanged():
    idx = LiveIndex(2, "v")
    idx.upsert(1, (0, 1))
    before = idx.snapshot()
    with pytest.raises(DataError, match="room 9 is not in the live index"):
        idx.remove(9)
    with pytest.raises(DataError, match=r"SID \(1, 2, 3\) has 3 codes, the index holds 2-level SIDs"):
        idx.upsert(1, (1, 2, 3))
    assert idx.snapshot() is before


@pytest.mark.slow
def test_concurrent_readers_always_see_a_consistent_index():
    idx = LiveIndex(3, "v")
    rng = np.random.default_rng(0)
    stop = threading.Event()
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            snap = idx.snapshot()
            for room, sid in zip(snap.rooms.tolist(), map(tuple, snap.codes.tolist())):
                if room not in snap.rooms_for(sid):
                    problems.append(f"room {room} missing from its SID")
                for level in range(3):
                    if sid[level] not in snap.allowed_next(sid[:level]).tolist():
                        problems.append(f"prefix {sid[:level]} lacks {sid[level]}")
            n_from_prefix = sum(len(r) for r in snap.by_sid.values())
            if n_from_prefix != len(snap.rooms):
                problems.append("room count mismatch")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    live: set[int] = set()
    for _ in range(3000):
        room = int(rng.integers(0, 60))
        if room in live and rng.random() < 0.2:
            idx.remove(room)
            live.discard(room)
        else:
            idx.upsert(room, tuple(int(c) for c in rng.integers(0, 4, size=3)))
            live.add(room)
    stop.set()
    for t in threads:
        t.join()
    assert not problems, problems[:3]
    assert sorted(live) == idx.snapshot().rooms.tolist()
