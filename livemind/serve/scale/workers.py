"""`livemind worker KIND`: the processes behind a service that runs on a broker.

- `tokenizer --shard i/n`: the dynamic tokenizer for the rooms with `room % n == i`. Reads the
  `rooms` stream in group `tokenizer-iofn`, re-encodes the batch's segments with one embedding call,
  and in one transaction stores each room's tokenizer state (pooled content, segment count, last
  index, SID), publishes each segment's SID and the live set, and acknowledges the entries. The
  state lives in Redis, not in the worker: a restarted or replacement worker resumes exactly.
- `state`: the sequencer. Reads `events` in group `state`, waits until every segment of an entry has
  its SID, and appends the entry with its SIDs to `applied`, the log the recommender replicas fold
  into their live state (viewer histories, room signals, the live index), in acceptance order.
- `archive`: reads `events` in group `archive` and appends each batch to the DuckDB event store
  (`LiveLog`) under the broker's event ids; it trims `events` behind the slowest group.

Idempotence: a redelivered entry changes nothing. The tokenizer skips a room_start of a room it
knows, a segment at or below the room's last index, a room_end of an ended room; the state worker
skips entries at or below the last one it applied (stored with its output); the archive skips
offsets it holds.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import orjson

from livemind.errors import ConfigError, DataError
from livemind.rec.tokenizer.dynamic import DynamicTokenizer, SavedRoom
from livemind.serve.scale.broker import Broker, Entry, Group, check_version, redis, stream_id
from livemind.world.live_log import LiveLog, RoomEnd
from livemind.world.schema import Room, Segment

log = logging.getLogger("livemind.worker")

WorkerKind = Literal["tokenizer", "state", "archive"]


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected i/n, e.g. 0/2") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {text!r}: expected 0 <= i < n")
    return i, n


@dataclass(frozen=True)
class WorkerConfig:
    kind: WorkerKind
    broker: str  # redis://HOST:PORT/DB
    shard: tuple[int, int] = (0, 1)  # tokenizer: this worker's rooms are room % n == i
    tokenizer: Path | None = None  # tokenizer: its folder (livemind rec tokenizer fit)
    cache: Path | None = None  # tokenizer: the segment-embedding cache
    store: Path | None = None  # archive: the DuckDB event store
    consumer: str | None = None  # the consumer name (default kind-iofn: a restart resumes its pending entries)
    claim_idle_ms: int = 10_000  # entries another consumer left pending this long are taken over
    count: int = 64  # entries per read
    prefix: str = "{livemind}"

    def __post_init__(self) -> None:
        if self.kind not in ("tokenizer", "state", "archive"):
            raise ConfigError(f"worker kind {self.kind!r}: expected tokenizer, state or archive")
        if self.kind == "tokenizer" and self.tokenizer is None:
            raise ConfigError("a tokenizer worker needs --tokenizer")
        if self.kind == "archive" and self.store is None:
            raise ConfigError("an archive worker needs --store")
        if self.kind != "tokenizer" and self.shard != (0, 1):
            raise ConfigError(f"--shard {self.shard[0]}/{self.shard[1]}: only tokenizer workers are sharded; the state "
                              "worker sequences the whole log and the archive writes one store (run a standby instead)")

    @property
    def name(self) -> str:
        return self.consumer or f"{self.kind}-{self.shard[0]}of{self.shard[1]}"


def _room_of(r) -> int:
    return r.id if isinstance(r, Room) else r.room


def _pack(saved: SavedRoom) -> bytes:
    head = orjson.dumps({"s": saved.streamer, "n": saved.n, "i": saved.last_index,
                         "sid": None if saved.sid is None else list(saved.sid)})
    return head + b"\n" + saved.pool_sum.astype(np.float64).tobytes()


def _unpack(raw: bytes) -> SavedRoom:
    head, pool = raw.split(b"\n", 1)
    st = orjson.loads(head)
    return SavedRoom(st["s"], np.frombuffer(pool, dtype=np.float64).copy(), st["n"], st["i"],
                     None if st["sid"] is None else tuple(st["sid"]))


_ENDED = b"ended"


class _GroupWorker:
    """A worker is one consumer of one group: `step` reads a batch of entries and `handle`s them."""

    group: Group

    def step(self, block_ms: int = 200) -> int:
        entries = self.group.read(block_ms)
        if entries:
            self.handle(entries)
        return len(entries)

    def handle(self, entries: list[Entry]) -> None:
        raise NotImplementedError

    def trim(self) -> int:
        """Trim the stream this worker's group reads behind the slowest group (0: not this worker's job)."""
        return 0


class TokenizerWorker(_GroupWorker):
    def __init__(self, cfg: WorkerConfig, broker: Broker) -> None:
        self.cfg, self.b = cfg, broker
        self.tok = DynamicTokenizer.load(cfg.tokenizer, cache_dir=cfg.cache)
        check_version(broker, self.tok.version)
        i, n = cfg.shard
        broker.r.set(f"{broker.prefix}:tokenizer:shards", n, nx=True)
        have = int(broker.r.get(f"{broker.prefix}:tokenizer:shards"))
        if have != n:
            raise ConfigError(f"--shard {i}/{n}: this deployment's tokenizer runs in {have} shards; every tokenizer "
                              f"worker must say /{have}")
        groups = [Group(broker, broker.rooms, f"tokenizer-{j}of{n}", cfg.name, cfg.claim_idle_ms, cfg.count)
                  for j in range(n)]  # every shard's group exists before any trim, so none loses entries
        self.group = groups[i]
        self.reencoded = 0

    def handle(self, entries: list[Entry]) -> None:
        """Apply this shard's room records of `entries` in order (segments in one embedding call per run
        between room ends) and publish the outcome with the acknowledgement, in one transaction."""
        i, n = self.cfg.shard
        records = [r for e in entries for r in e.records if _room_of(r) % n == i]
        rooms = sorted({_room_of(r) for r in records})
        stored = dict(zip(rooms, self.b.r.hmget(self.b.tokstate, rooms))) if rooms else {}
        tok = self.tok
        tok.reset()
        last: dict[int, int] = {}  # live room -> its last segment index, as applied so far
        for room, raw in stored.items():
            if raw and raw != _ENDED:
                saved = _unpack(raw)
                tok.restore_room(room, saved)
                last[room] = saved.last_index
        pending: list[Segment] = []
        sids: dict[tuple[int, int], tuple[int, ...]] = {}
        ended: set[int] = set()

        def flush() -> None:
            for s, sid in zip(pending, tok.update_many(pending) if pending else []):
                sids[(s.room, s.index)] = sid
            pending.clear()

        for r in records:  # what was applied before (a redelivery) is skipped
            room = _room_of(r)
            if isinstance(r, Room):
                if stored.get(room) is None and room not in last and room not in ended:
                    tok.start_room(room, r.streamer)
                    last[room] = -1
            elif isinstance(r, Segment):
                if room in last and r.index > last[room]:
                    pending.append(r)
                    last[room] = r.index
            elif isinstance(r, RoomEnd) and room in last:
                if any(s.room == room for s in pending):
                    flush()
                tok.end_room(room)
                del last[room]
                ended.add(room)
        flush()
        pipe = self.b.r.pipeline(transaction=True)
        touched = {room for room, _ in sids} | {r.id for r in records if isinstance(r, Room) and r.id in last}
        for room in touched - ended:
            pipe.hset(self.b.tokstate, room, _pack(tok.save_room(room)))
        for room in ended:
            pipe.hset(self.b.tokstate, room, _ENDED)
            pipe.hdel(self.b.live, room)
        live: dict[int, str] = {}
        for (room, index), sid in sids.items():
            pipe.hset(self.b.sid, f"{room}:{index}", ",".join(map(str, sid)))
            if room not in ended:
                live[room] = f"{index}:{','.join(map(str, sid))}"
        if live:
            pipe.hset(self.b.live, mapping=live)
        pipe.xack(self.b.rooms, self.group.group, *[e.id for e in entries])
        pipe.execute()
        self.reencoded += len(sids)

    def trim(self) -> int:
        return self.b.trim_behind_groups(self.b.rooms)


class StateWorker(_GroupWorker):
    """The sequencer of `applied`: exactly one at a time. It holds a lease (`Broker.hold_lease`)
    while it works; a second state worker started beside it (a standby) waits, and takes over the
    group's pending entries, oldest first, once the lease lapses. Each write of `applied` is a
    compare-and-set: it commits only if neither the last applied id nor the lease changed since it
    read them, so two sequencers can never interleave or reorder `applied`."""

    def __init__(self, cfg: WorkerConfig, broker: Broker, stop: threading.Event) -> None:
        self.cfg, self.b, self.stop = cfg, broker, stop
        self.group = Group(broker, broker.events, "state", cfg.name, cfg.claim_idle_ms, cfg.count)
        self.applied = 0
        self.lease_ms = max(2000, cfg.claim_idle_ms)
        self.holding = False

    def step(self, block_ms: int = 200) -> int:
        held = self.b.hold_lease(self.b.state_lease, self.cfg.name, self.lease_ms)
        if not held:
            self.holding = False
            time.sleep(block_ms / 1000)
            return 0
        # the group's entries left pending by an earlier sequencer (or this one) come first, in order
        entries = self.group.claim(idle_ms=0) if not self.holding else []
        self.holding = True
        entries = entries or self.group.read(block_ms)
        if entries:
            self.handle(sorted(entries, key=lambda e: stream_id(e.id)))
        return len(entries)

    def _sids(self, entry: Entry) -> list[list[int]]:
        """The SIDs of the entry's segments, waiting for the tokenizer workers to publish them."""
        keys = [f"{r.room}:{r.index}" for r in entry.records if isinstance(r, Segment)]
        if not keys:
            return []
        wait = 0.001
        while True:
            got = self.b.r.hmget(self.b.sid, keys)
            if all(got):
                return [[int(c) for c in g.split(b",")] for g in got]
            if self.stop.is_set():
                raise InterruptedError
            time.sleep(wait)
            wait = min(wait * 2, 0.05)

    def handle(self, entries: list[Entry]) -> None:
        with self.b.r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.b.state_last, self.b.state_lease)  # compare-and-set on both
                holder = pipe.get(self.b.state_lease)
                if holder is not None and holder.decode() != self.cfg.name:
                    self.holding = False
                    return  # another sequencer has the lease: it applies these
                last = pipe.get(self.b.state_last)
                last_id = stream_id(last.decode()) if last else (0, 0)
                out, done = [], []
                for e in entries:
                    if stream_id(e.id) > last_id:  # else: applied before (a redelivery)
                        out.append((e, self._sids(e)))
                        last_id = stream_id(e.id)
                        done.append(e)
                pipe.multi()
                for e, sids in out:
                    pipe.xadd(self.b.applied, {"first": e.first, "n": len(e.records), "data": e.raw,
                                               "sids": orjson.dumps(sids)})
                    keys = [f"{r.room}:{r.index}" for r in e.records if isinstance(r, Segment)]
                    if keys:
                        pipe.hdel(self.b.sid, *keys)
                if done:
                    pipe.set(self.b.state_last, done[-1].id)
                pipe.xack(self.b.events, self.group.group, *[e.id for e in entries])
                pipe.execute()
            except redis.WatchError:  # the lease or the applied log moved under us: nothing written
                self.holding = False
                log.warning("state worker %s: the applied log or the lease changed meanwhile; nothing written",
                            self.cfg.name)
                return
        self.applied += sum(len(e.records) for e in done)


class ArchiveWorker(_GroupWorker):
    def __init__(self, cfg: WorkerConfig, broker: Broker) -> None:
        self.cfg, self.b = cfg, broker
        self.group = Group(broker, broker.events, "archive", cfg.name, cfg.claim_idle_ms, cfg.count)
        self.log = LiveLog(cfg.store)

    def handle(self, entries: list[Entry]) -> None:
        for e in entries:
            self.log.append(e.records, first=e.first)  # committed before the acknowledgement
        self.b.r.xack(self.b.events, self.group.group, *[e.id for e in entries])

    def trim(self) -> int:
        return self.b.trim_behind_groups(self.b.events)


def run_worker(cfg: WorkerConfig, stop: threading.Event | None = None, trim_every_s: float = 5.0) -> None:
    """Run one worker until `stop` is set (SIGTERM / Ctrl-C in the CLI)."""
    stop = stop or threading.Event()
    broker = Broker(cfg.broker, cfg.prefix)
    broker.ping()
    worker: TokenizerWorker | StateWorker | ArchiveWorker
    if cfg.kind == "tokenizer":
        worker = TokenizerWorker(cfg, broker)
    elif cfg.kind == "state":
        worker = StateWorker(cfg, broker, stop)
    else:
        worker = ArchiveWorker(cfg, broker)
    log.info("%s worker %s on %s", cfg.kind, cfg.name, cfg.broker)
    next_trim = time.monotonic() + trim_every_s
    try:
        while not stop.is_set():
            try:
                worker.step()
            except InterruptedError:
                break
            except DataError:
                log.exception("an entry could not be applied; it stays pending")
                time.sleep(1.0)
            if time.monotonic() >= next_trim:
                worker.trim()
                next_trim = time.monotonic() + trim_every_s
    finally:
        if isinstance(worker, ArchiveWorker):
            worker.log.close()
        broker.close()
