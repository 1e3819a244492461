"""Scale-out on Redis Streams, against a real redis-server on a free port: the broker's
append, the workers' at-least-once, idempotent application, takeover of a dead consumer's entries,
and the follower that makes a replica's live state equal to the single-process service's."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from livemind.rec.live.state import BatchError, LiveState
from livemind.rec.tokenizer.dynamic import DynamicTokenizer
from livemind.serve.rec.replay import world_stream
from livemind.serve.scale.broker import Broker, decode, encode
from livemind.serve.scale.follower import Follower, SidFeed
from livemind.serve.scale.workers import ArchiveWorker, StateWorker, TokenizerWorker, WorkerConfig
from livemind.world.live_log import LiveLog, RoomEnd
from livemind.world.schema import Event, EventKind, Room, Segment

T0 = 1767571200.0


def world_records(world, hours: float = 20.0) -> list:
    return [r for _, _, r in world_stream(world, T0 + hours * 3600)]


def batches(records: list, size: int = 300) -> list[list]:
    return [records[i:i + size] for i in range(0, len(records), size)]


def test_records_cross_the_wire_unchanged():
    for r in (Room(3, 7, T0, float("inf"), "a title"), RoomEnd(3, T0 + 9.5),
              Segment(3, 2, T0 + 1, "on the card: lipstick", 12, "beauty"),
              Event(5, 3, T0 + 2.25, EventKind.GIFT, 9.99)):
        assert decode(encode(r)) == r


def test_append_checks_the_batch_numbers_its_events_and_survives_kill_9_of_redis(redis_server):
    b = Broker(redis_server.url)
    room = Room(1, 4, T0, float("inf"), "")
    assert b.append([room, Segment(1, 0, T0, "hello there", 3, "food")]) == 2
    assert b.append([Event(9, 1, T0 + 5, EventKind.WATCH, 30.0)]) == 3
    with pytest.raises(BatchError) as bad:  # a segment index that goes back; nothing of the batch is stored
        b.append([Event(9, 1, T0 + 6, EventKind.LIKE, 0.0), Segment(1, 0, T0 + 7, "again", 3, "food")])
    assert (bad.value.index, bad.value.field, bad.value.value) == (1, "index", 0)
    with pytest.raises(BatchError) as bad:
        b.append([Event(9, 2, T0 + 6, EventKind.LIKE, 0.0)])
    assert (bad.value.field, bad.value.value) == ("room", 2)
    assert b.last_event() == 3 and b.r.xlen(b.events) == 2 and b.r.xlen(b.rooms) == 1
    b.close()
    redis_server.kill9()  # appendfsync always: what was acknowledged is on disk
    redis_server.start()
    b = Broker(redis_server.url)
    entries = list(b.entries(b.events))
    assert [(e.first, len(e.records)) for e in entries] == [(1, 2), (3, 1)]
    assert entries[0].records[1] == Segment(1, 0, T0, "hello there", 3, "food")
    with pytest.raises(BatchError):  # the room facts survived too: room 1 cannot start again
        b.append([Room(1, 4, T0 + 9, float("inf"), "")])
    assert b.append([RoomEnd(1, T0 + 60)]) == 4
    b.close()


def test_concurrent_appenders_start_a_room_once(redis_server):
    results: list = []

    def start_room(i: int) -> None:
        b = Broker(redis_server.url)
        try:
            results.append(b.append([Room(77, i, T0, float("inf"), ""), Segment(77, 0, T0, f"seg {i}", 1, "x")]))
        except BatchError as exc:
            results.append(exc.field)
        b.close()

    threads = [threading.Thread(target=start_room, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=str) == [2] + ["room"] * 7


def lag(b: Broker, stream: str, group: str) -> int:
    return next(g["lag"] for g in b.r.xinfo_groups(stream) if g["name"].decode() == group)


def run(worker, until) -> None:
    for _ in range(10_000):
        if until():
            return
        worker.step(block_ms=10)
    raise AssertionError("the worker did not get there")


def test_workers_take_over_a_dead_consumers_entries_and_apply_every_event_once(models, tiny_world, redis_server, tmp_path):
    root, _ = models
    _, world = tiny_world
    records = world_records(world)
    b = Broker(redis_server.url)
    for batch in batches(records):
        b.append(batch)
    cfg = WorkerConfig("tokenizer", redis_server.url, (0, 1), root / "tok", claim_idle_ms=0, count=4)
    # a tokenizer worker reads entries and dies before acknowledging them (kill -9 mid-batch)
    dead = TokenizerWorker(cfg, b)
    dead.group.consumer = "dead"
    held = dead.group.read(block_ms=10)
    assert held and b.r.xpending(b.rooms, "tokenizer-0of1")["pending"] == len(held)
    # another consumer of the group takes them over (XAUTOCLAIM) and goes on to the end
    tok = TokenizerWorker(WorkerConfig("tokenizer", redis_server.url, (0, 1), root / "tok", consumer="live",
                                       claim_idle_ms=0, count=4), b)
    claimed = tok.group.claim()
    assert [e.id for e in claimed] == [e.id for e in held]
    tok.handle(claimed)
    run(tok, lambda: tok.group.pending() == 0 and lag(b, b.rooms, "tokenizer-0of1") == 0)
    state = StateWorker(WorkerConfig("state", redis_server.url), b, threading.Event())
    run(state, lambda: state.group.pending() == 0 and lag(b, b.events, "state") == 0)
    archive = ArchiveWorker(WorkerConfig("archive", redis_server.url, store=tmp_path / "a.duckdb"), b)
    run(archive, lambda: archive.log.offset == len(records))

    # the SIDs are the single-process tokenizer's, segment by segment
    single = LiveState(DynamicTokenizer.load(root / "tok"))
    for batch in batches(records):
        single.apply(batch)
    replica_state = LiveState(SidFeed(single.tokenizer.levels, single.tokenizer.version))
    follower = Follower(b, replica_state, replica_state.tokenizer)
    assert follower.catch_up() == len(records) and follower.applied == len(records)
    assert single.reencodes == replica_state.reencodes == tok.reencoded > 0
    for room, log in single.rooms.items():
        assert replica_state.rooms[room].seg_codes == log.seg_codes
    snap_a, snap_b = single.snapshot(), replica_state.snapshot()
    assert np.array_equal(snap_a.rooms, snap_b.rooms) and np.array_equal(snap_a.codes, snap_b.codes)
    viewer = next(iter(single.viewers))
    t = T0 + 20 * 3600
    assert np.array_equal(single.history(viewer, t, 8).codes, replica_state.history(viewer, t, 8).codes)

    # redelivered entries change nothing: the same entries handled again by each worker
    tokstate, applied, archived = b.r.hgetall(b.tokstate), b.r.xlen(b.applied), archive.log.count()
    tok.handle(list(b.entries(b.rooms)))
    state.handle(list(b.entries(b.events)))
    archive.handle(list(b.entries(b.events)))
    assert b.r.hgetall(b.tokstate) == tokstate and b.r.xlen(b.applied) == applied and archive.log.count() == archived
    assert np.array_equal(archive.log.offsets(), np.arange(1, len(records) + 1))
    assert follower.catch_up() == len(records) and replica_state.events == len(records)  # applied once
    # every group has acknowledged everything: the streams are trimmed to nothing behind them
    n_entries = b.r.xlen(b.events)
    assert n_entries == len(batches(records)) and archive.trim() == n_entries and b.r.xlen(b.events) == 0
    archive.log.close()
    b.close()


def test_a_replay_into_an_archive_needs_contiguous_offsets(tmp_path):
    log = LiveLog(tmp_path / "x.duckdb")
    r = [Event(1, 1, T0, EventKind.LIKE, 0.0)] * 3
    assert log.append(r, first=1) == 3 and log.append(r, first=1) == 3  # a redelivery: skipped
    with pytest.raises(Exception, match="must start at 4"):
        log.append(r, first=6)
    log.close()


def test_a_replica_refuses_bad_batches_and_answers_503_without_its_broker(models, redis_server):
    import dataclasses

    import httpx

    from livemind.serve.api.app import ServeConfig
    from livemind.serve.rec.engine import EngineConfig
    from tests.serve.conftest import Server

    root, _ = models
    cfg = ServeConfig(EngineConfig(root / "tok", root / "gen", cache=None, broker=redis_server.url))
    room = {"kind": "room_start", "room": 5, "streamer": 2, "start_time": T0, "title": ""}
    seg = {"kind": "segment", "room": 5, "index": 0, "start_time": T0, "text": "on the card: a kettle", "product": 1,
           "topic": "home"}
    with Server(cfg) as srv:
        assert srv.wait_ready()["broker"] == redis_server.url
        ok = httpx.post(srv.url + "/v1/events", json={"events": [room, seg]})
        assert ok.status_code == 200 and ok.json() == {"accepted": 2, "offset": 2}
        b = Broker(redis_server.url)  # acknowledged, not yet live: the workers make it live
        assert httpx.get(srv.url + "/readyz").json()["offset"] == 0
        tok = TokenizerWorker(WorkerConfig("tokenizer", redis_server.url, (0, 1), root / "tok"), b)
        state = StateWorker(WorkerConfig("state", redis_server.url), b, threading.Event())
        run(tok, lambda: tok.reencoded == 1)
        run(state, lambda: state.applied == 2)
        live = httpx.post(srv.url + "/v1/recommend", json={"viewer": 1, "offset": 2})
        assert live.status_code == 200 and [r["room"] for r in live.json()["rooms"]] == [5]
        assert "livemind_segment_reencodes_total 1.0" in httpx.get(srv.url + "/metrics").text
        b.close()
        again = httpx.post(srv.url + "/v1/events", json={"events": [{**seg, "start_time": T0 + 30}]})
        assert again.status_code == 422 and (again.json()["field"], again.json()["value"]) == ("index", 0)
        redis_server.kill9()
        gone = httpx.post(srv.url + "/v1/events", json={"events": [{**seg, "index": 1}]}, timeout=60)
        assert gone.status_code == 503 and redis_server.url in gone.json()["error"]
    with pytest.raises(Exception, match="tokenizer and a generator"):
        dataclasses.replace(cfg.engine, tokenizer=None, generator=None)


def test_a_follower_that_meets_a_gap_stops_and_says_why(redis_server):
    import time

    import orjson

    b = Broker(redis_server.url)
    state = LiveState(SidFeed(2, "tok-test"))
    follower = Follower(b, state, state.tokenizer)
    follower.start()
    b.r.xadd(b.applied, {"first": 5, "n": 1, "data": orjson.dumps([encode(Event(1, 1, T0, EventKind.LIKE, 0.0))]),
                         "sids": b"[]"})
    deadline = time.time() + 10
    while follower.error is None and time.time() < deadline:
        time.sleep(0.01)
    assert follower.error == "RuntimeError: the applied log jumps from event 0 to 5" and state.events == 0
    follower.close()
    b.close()


def test_a_batch_id_is_appended_once_even_when_the_append_script_runs_again(redis_server):
    b = Broker(redis_server.url)
    room = Room(1, 4, T0, float("inf"), "")
    batch = [room, Segment(1, 0, T0, "hello there", 3, "food")]
    assert b.append(batch, batch_id="b-1") == 2
    assert b.append(batch, batch_id="b-1") == 2  # a client's retry: checked before the batch's rules
    entries = lambda: b.r.xlen(b.events)  # noqa: E731
    assert entries() == 1
    # the script itself, run again (a retry after a Redis timeout): the same id, nothing appended
    last, flag = b._append(keys=[b.seq, b.events, b.rooms, b.roommeta, f"{b.prefix}:batch:b-1"],
                           args=[2, b"[]", b"", 0, 0, 60])
    assert (int(last), flag) == (2, b"again") and entries() == 1 and b.last_event() == 2
    assert b.append([Event(9, 1, T0 + 5, EventKind.WATCH, 30.0)], batch_id="b-2") == 3
    assert b.append([Event(9, 1, T0 + 6, EventKind.WATCH, 30.0)]) == 4  # no id: appended as it comes
    assert b.r.ttl(f"{b.prefix}:batch:b-2") > 0  # remembered for a while, not for ever


def test_a_second_state_worker_beside_the_first_changes_nothing_and_takes_over_when_it_dies(redis_server):
    """Two sequencers at once once wrote `applied` out of order (every replica then stopped): one holds
    the lease and sequences; the other waits, then takes the group's pending entries, in order."""
    b = Broker(redis_server.url)
    for i in range(40):  # no segments: the state worker needs no tokenizer for these
        b.append([Room(100 + i, 1, T0 + i, float("inf"), "")] if i % 2 == 0 else
                 [Event(i, 100 + i - 1, T0 + i + 0.5, EventKind.LIKE, 0.0)])
    stop = threading.Event()
    workers = [StateWorker(WorkerConfig("state", redis_server.url, consumer=name, claim_idle_ms=500, count=3),
                           Broker(redis_server.url), stop) for name in ("a", "b")]

    def spin(w: StateWorker, until: float) -> None:
        import time

        while time.time() < until and not stop.is_set():
            w.step(block_ms=20)

    import time

    threads = [threading.Thread(target=spin, args=(w, time.time() + 1.0)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    firsts = [int(f[b"first"]) for _, f in b.r.xrange(b.applied)]
    assert firsts == sorted(firsts) == list(range(1, 41))  # every entry once, in acceptance order
    assert sorted(w.applied for w in workers) == [0, 40]  # the lease holder did it all
    holder = next(w for w in workers if w.applied)
    # the holder dies with entries read and unacknowledged; the standby takes over once the lease lapses
    for i in range(6):
        b.append([Event(50 + i, 100, T0 + 100 + i, EventKind.LIKE, 0.0)])
    holder.group.read(block_ms=10)  # read (pending), never applied: then kill -9
    assert b.r.xpending(b.events, "state")["pending"] > 0
    standby = next(w for w in workers if w is not holder)
    deadline = time.time() + 10
    while int(b.r.xlen(b.applied)) < 46 and time.time() < deadline:
        standby.step(block_ms=20)
    firsts = [int(f[b"first"]) for _, f in b.r.xrange(b.applied)]
    assert firsts == list(range(1, 47)) and standby.applied == 6


def test_an_entry_no_worker_can_read_goes_to_the_dead_letter_stream_with_its_reason(redis_server):
    import orjson

    b = Broker(redis_server.url)
    b.append([Room(1, 4, T0, float("inf"), "")])
    b.r.xadd(b.events, {"first": 2, "n": 1, "data": b"[[99, 1, 1, null, null]]"})  # not a record
    b.r.xadd(b.events, {"first": 2, "data": b"{not json"})
    b.append([Event(9, 1, T0 + 5, EventKind.WATCH, 30.0)])
    state = StateWorker(WorkerConfig("state", redis_server.url), b, threading.Event())
    for _ in range(5):
        state.step(block_ms=20)
    dead = b.r.xrange(b.dead)
    assert len(dead) == 2 and all(f[b"stream"] == b.events.encode() and f[b"group"] == b"state" for _, f in dead)
    assert b"IndexError" in dead[0][1][b"reason"] and b"JSONDecodeError" in dead[1][1][b"reason"]
    assert orjson.loads(dead[1][1][b"fields"])["data"] == "{not json"
    assert [int(f[b"first"]) for _, f in b.r.xrange(b.applied)] == [1, 2]  # the good ones, past the bad
    assert b.r.xpending(b.events, "state")["pending"] == 0  # nothing left to crash-loop on


def test_a_new_replica_starts_from_the_latest_snapshot_and_applied_stays_bounded(models, tiny_world, redis_server):
    """A follower snapshots its state every few events and trims `applied` behind the snapshot before;
    a replica started later loads the snapshot, follows the rest, and holds exactly the same state."""
    root, _ = models
    _, world = tiny_world
    records = world_records(world, 12.0)
    b = Broker(redis_server.url)
    tok = TokenizerWorker(WorkerConfig("tokenizer", redis_server.url, (0, 1), root / "tok"), b)
    state = StateWorker(WorkerConfig("state", redis_server.url), b, threading.Event())
    levels, version = tok.tok.levels, tok.tok.version
    first = LiveState(SidFeed(levels, version))
    follower = Follower(b, first, first.tokenizer, snapshot_every=len(records) // 5)
    snapshots = []
    for batch in batches(records, 100):
        b.append(batch)
        run(tok, lambda: lag(b, b.rooms, "tokenizer-0of1") == 0 and tok.group.pending() == 0)
        run(state, lambda: lag(b, b.events, "state") == 0 and state.group.pending() == 0)
        follower.poll()  # applies the new entries, then snapshots when one is due
        snapshots.append(b.r.hget(b.snapshot, "entry"))
    assert follower.applied == len(records) and len({s for s in snapshots if s}) >= 3
    entries = len(batches(records, 100))
    assert b.r.xlen(b.applied) < entries  # trimmed behind the snapshot before the latest
    late = LiveState(SidFeed(levels, version))
    again = Follower(b, late, late.tokenizer)
    assert again.catch_up() == len(records) and again.applied == len(records)
    assert late.dump() == first.dump()  # the same state, read back exactly
    assert late.snapshot().rooms.tolist() == first.snapshot().rooms.tolist()
    t = T0 + 12 * 3600
    for viewer in list(first.viewers)[:20]:
        assert np.array_equal(late.history(viewer, t, 8).codes, first.history(viewer, t, 8).codes)
