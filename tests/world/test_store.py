import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from livemind.errors import DataError
from livemind.world.schema import Event, EventBatch, EventKind
from livemind.world.store import EventStore
from livemind.world.tables import WorldData


@pytest.fixture()
def store(tiny_world):
    _, data = tiny_world
    s = EventStore()
    s.import_world(data)
    yield s
    s.close()


def test_parquet_round_trip_is_exact(tiny_world, store, tmp_path):
    _, data = tiny_world
    store.export_parquet(tmp_path / "w")
    back = WorldData.load(tmp_path / "w")
    for name in ("streamers", "rooms", "segments", "products", "viewers", "questions"):
        assert back.table(name).equals(data.table(name)), name
    # events come back as a multiset; compare sorted
    key = [("time", "ascending"), ("viewer", "ascending"), ("kind", "ascending"), ("room", "ascending")]
    assert back.events.sort_by(key).equals(data.events.sort_by(key))
    again = EventStore()
    assert again.import_parquet(tmp_path / "w") == (data.events.num_rows, 0)
    assert again.count() == data.events.num_rows


def test_history_is_the_viewers_events_before_t_oldest_first(tiny_world, store):
    _, data = tiny_world
    ev = data.event_batch()
    viewer = int(np.bincount(ev.viewer).argmax())
    mine = ev.take(np.flatnonzero(ev.viewer == viewer))
    until = float(np.median(mine.time))
    expected = mine.take(np.flatnonzero(mine.time < until))
    hist = store.history(viewer, until)
    assert len(hist) == len(expected) > 0
    assert np.all(np.diff(hist.time) >= 0) and hist.time.max() < until
    assert sorted(zip(hist.time, hist.kind, hist.room)) == sorted(zip(expected.time, expected.kind, expected.room))
    clicks = store.history(viewer, until, kinds=("click",), limit=3)
    assert len(clicks) == min(3, int(np.sum(expected.kind == EventKind.CLICK.code)))
    assert set(clicks.kind.tolist()) <= {EventKind.CLICK.code}
    with pytest.raises(DataError, match="unknown event kind 'clicks'"):
        store.history(viewer, until, kinds=("clicks",))


def test_live_rooms_match_the_simulator(tiny_world, store):
    world, _ = tiny_world
    for t in np.linspace(world.config.start_time, world.config.end_time, 13):
        assert np.array_equal(store.live_rooms(t), world.live_rooms(t))


def test_failed_append_stores_nothing(tiny_world, store):
    world, _ = tiny_world
    before = store.count()
    t = world.room_start[0] + 1
    good = Event(1, 0, float(t), EventKind.LIKE)
    not_live = Event(2, 0, float(world.room_end[0]), EventKind.LIKE)
    with pytest.raises(DataError, match=r"event row 1: room 0 is not live at t=.*nothing from this batch was stored"):
        store.append_events(EventBatch.from_records([good, not_live]))
    assert store.count() == before
    with pytest.raises(DataError, match="event row 0: room 424242 is unknown"):
        store.append_events(EventBatch.from_records([Event(1, 424242, float(t), EventKind.LIKE)]))
    table = EventBatch.from_records([good]).to_arrow().set_column(3, "kind", [["dislike"]])
    with pytest.raises(DataError, match="unknown event kind 'dislike'"):
        store.append_events(table)
    assert store.count() == before
    assert store.append_events(EventBatch.from_records([good, not_live]), on_bad="skip") == (1, 1)
    assert store.count() == before + 1


def test_returned_append_survives_a_crash(tmp_path, tiny_world):
    world, _ = tiny_world
    db = tmp_path / "events.duckdb"
    t = float(world.room_start[0] + 5)
    code = textwrap.dedent(f"""
        import os, pyarrow as pa
        from livemind.world.store import EventStore
        from livemind.world.schema import EventBatch, Event, EventKind
        s = EventStore({str(db)!r})
        s.append_table("rooms", pa.table({{"id": [0], "streamer": [0], "start_time": [{world.room_start[0]}],
                                           "end_time": [{world.room_end[0]}], "title": ["r"]}}))
        s.append_events(EventBatch.from_records([Event(v, 0, {t}, EventKind.CLICK) for v in range(7)]))
        os._exit(0)  # no close, no checkpoint: only what was committed survives
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    with EventStore(db) as s:
        assert s.count("click") == 7


def test_concurrent_reads_during_appends(tiny_world):
    world, data = tiny_world
    store = EventStore()
    store.append_table("rooms", data.rooms)
    t = float(world.room_start[0] + 2)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(50):
                n = store.count()
                assert n % 10 == 0  # appends are atomic: a reader never sees half a batch
                store.live_rooms(t)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for th in threads:
        th.start()
    for i in range(30):
        store.append_events(EventBatch.from_records([Event(i, 0, t, EventKind.LIKE)] * 10))
    for th in threads:
        th.join()
    assert not errors
    assert store.count() == 300
