"""Redis Streams as the log between ingest and the workers.

Streams and keys, all under one prefix (`{livemind}` by default: several deployments can share a
Redis, and on a Redis Cluster the braces keep every key in one hash slot, as the Lua script needs):

    {p}:events   every accepted batch, in acceptance order: `first` (the id of its first event; events
                 are numbered 1, 2, ... across batches), `n`, `data` (the records, compact JSON)
    {p}:rooms    the same batches' room records (room_start, segment, room_end), in order: what the
                 tokenizer workers read
    {p}:applied  the state worker's output: each events entry again, with the SIDs of its segments;
                 what the recommender replicas fold into their live state
    {p}:seq      the last event id given out
    {p}:roommeta room -> "start end last_index last_time": what the API checks a batch against
    {p}:tokstate room -> the tokenizer's state of the room (pooled content, last segment, SID)
    {p}:sid      "room:index" -> the SID of that segment, until the state worker has applied it
    {p}:live     room -> "index:c1,c2,.." of every live room that has shown a segment (the live set)
    {p}:dead     entries a worker could not read (malformed), with the reason: moved there and
                 acknowledged instead of being retried for ever
    {p}:state:lease  the state worker that sequences `applied` now (a lease it renews); another
                 one started beside it waits, and takes over when the lease lapses
    {p}:snapshot a replica's live state as of an `applied` entry (`entry`, `applied`: its last event,
                 `data`: `LiveState.dump`, `prev`: the snapshot before): a new replica loads it and follows
                 `applied` from there; `applied` is trimmed behind the snapshot before the latest, so
                 replicas already following have one snapshot period of slack
    {p}:batch:ID the last event id of the batch a client sent with batch_id ID (for a day): a retry
                 is answered with it and appends nothing

Acceptance (`append`): the batch is checked with the single-process service's rules
(`rec.live.state.check_batch`) against the rooms' facts in `{p}:roommeta`; one Lua script (atomic
in Redis) then verifies that none of those rooms changed meanwhile (optimistic concurrency: several
API processes may append; a conflict re-checks), numbers the events, XADDs the batch to `events`
(and its room records to `rooms`) and stores the rooms' new facts. Redis answers only after the
script's writes reach its append-only file under the server's `appendfsync` policy: `always` makes
an acknowledged batch durable on disk (what `livemind cluster up` runs), `everysec` loses at most
about a second of acknowledged events to a power cut, for more throughput.

Consumers use consumer groups (`Group`): each entry goes to one consumer of a group, stays pending
until that consumer acknowledges it, is re-read by the same consumer after a restart (`0` before
`>`), and can be taken over by another consumer with XAUTOCLAIM once idle. Every worker applies
an entry and acknowledges it in one MULTI/EXEC transaction together with the state it changed, and
skips what it already applied, so a redelivered entry changes nothing. Streams read by groups are
trimmed only behind the slowest group (`trim_behind_groups`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

import orjson

from livemind.errors import ConfigError, DataError, need
from livemind.rec.live.state import RoomView, check_batch
from livemind.serve.scale.errors import BrokerError
from livemind.world.live_log import LiveRecord, RoomEnd
from livemind.world.schema import EVENT_KINDS, Event, EventKind, Room, Segment

redis = need("redis", "broker", "the broker (Redis Streams)")
_KINDS = [EventKind(k) for k in EVENT_KINDS]
_KIND_ID = {k: i for i, k in enumerate(_KINDS)}

# KEYS: seq, events, rooms, roommeta, the batch id's key ("{p}:batch:" alone when none, in the same slot). ARGV: n, events data, rooms data
# ('' for none), m, then m pairs (room, expected facts: '' when absent), then k, then k pairs (room, new
# facts), then the seconds a batch id is remembered. Returns {last id, entry id}, {last id, 'again'} for a
# batch id already appended (a retried script appends nothing), or {-1, room} when a room changed since
# it was read.
_APPEND = """
local once = string.sub(KEYS[5], -1) ~= ':'
if once then
  local done = redis.call('GET', KEYS[5])
  if done then return {tonumber(done), 'again'} end
end
local n = tonumber(ARGV[1])
local m = tonumber(ARGV[4])
local i = 5
for _ = 1, m do
  local cur = redis.call('HGET', KEYS[4], ARGV[i])
  if not cur then cur = '' end
  if cur ~= ARGV[i + 1] then return {-1, ARGV[i]} end
  i = i + 2
end
local last = redis.call('INCRBY', KEYS[1], n)
local first = last - n + 1
local id = redis.call('XADD', KEYS[2], '*', 'first', first, 'n', n, 'data', ARGV[2])
if ARGV[3] ~= '' then redis.call('XADD', KEYS[3], '*', 'first', first, 'data', ARGV[3]) end
local k = tonumber(ARGV[i])
i = i + 1
for _ = 1, k do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if once then redis.call('SET', KEYS[5], last, 'EX', tonumber(ARGV[i])) end
return {last, id}
"""


# KEYS: the lease. ARGV: holder, milliseconds. Takes a free lease or renews one's own; 1 if held.
_LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""

BATCH_ID_TTL_S = 86_400  # how long the broker remembers a batch id (a client retries within seconds)


def encode(r: LiveRecord) -> list:
    """A record as a compact JSON list: [kind, fields...] (kind: an event kind's index, or r/e/s)."""
    if isinstance(r, Room):
        return ["r", int(r.id), int(r.streamer), float(r.start_time), r.title]
    if isinstance(r, RoomEnd):
        return ["e", int(r.room), float(r.time)]
    if isinstance(r, Segment):
        return ["s", int(r.room), int(r.index), float(r.start_time), r.text, int(r.product), r.topic]
    return [_KIND_ID[EventKind(r.kind)], int(r.viewer), int(r.room), float(r.time), float(r.value)]


def decode(x: list) -> LiveRecord:
    kind = x[0]
    if kind == "r":
        return Room(x[1], x[2], x[3], math.inf, x[4])
    if kind == "e":
        return RoomEnd(x[1], x[2])
    if kind == "s":
        return Segment(x[1], x[2], x[3], x[4], x[5], x[6])
    return Event(x[1], x[2], x[3], _KINDS[kind], x[4])


def _facts(v: RoomView) -> str:
    return f"{v.start!r} {v.end!r} {v.last_index} {v.last_time!r}"


def _view(facts: bytes | None) -> RoomView | None:
    if not facts:
        return None
    start, end, last_index, last_time = facts.split()
    return RoomView(float(start), float(end), int(last_index), float(last_time))


@dataclass(frozen=True)
class Entry:
    """One stream entry: a batch of records numbered first .. first + len(records) - 1."""

    id: str
    first: int
    records: list[LiveRecord]
    sids: list | None = None  # applied stream: the SIDs of the batch's segments, in order
    raw: bytes = b""  # the records as stored (the state worker passes them on without re-encoding)


def parse_entry(entry_id: bytes | str, fields: dict) -> Entry:
    data = orjson.loads(fields[b"data"])
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    first = int(fields[b"first"])
    if b"n" in fields and b"sids" not in fields:  # events
        return Entry(eid, first, [decode(x) for x in data], raw=fields[b"data"])
    if b"sids" in fields:  # applied
        return Entry(eid, first, [decode(x) for x in data], sids=orjson.loads(fields[b"sids"]), raw=fields[b"data"])
    return Entry(eid, first, [decode(x) for x in data])  # rooms: the batch's room records


def stream_id(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


class Broker:
    """A connection to the Redis that carries the live log, and the operations on it."""

    def __init__(self, url: str, prefix: str = "{livemind}") -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"--broker {url!r}: expected redis://HOST:PORT/DB")
        self.url, self.prefix = url, prefix
        self.r = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=30)
        self._append = self.r.register_script(_APPEND)
        k = lambda name: f"{prefix}:{name}"  # noqa: E731
        self.events, self.rooms, self.applied = k("events"), k("rooms"), k("applied")
        self.seq, self.roommeta, self.tokstate, self.sid, self.live = (k("seq"), k("roommeta"), k("tokstate"),
                                                                       k("sid"), k("live"))
        self.tokenizer_version = k("tokenizer")
        self.state_last = k("state:last")
        self.state_lease = k("state:lease")
        self.snapshot, self.snapshot_lease = k("snapshot"), k("snapshot:lease")  # a replica's state, `applied` so far  # the consumer that sequences `applied` now (one at a time)
        self.dead = k("dead")  # entries no worker could read, with the reason, instead of a crash loop
        self._lease = self.r.register_script(_LEASE)

    def ping(self) -> None:
        try:
            self.r.ping()
        except redis.RedisError as exc:
            raise BrokerError(f"the broker at {self.url} does not answer: {exc}") from exc

    def close(self) -> None:
        self.r.close()

    # ------------------------------------------------------------------------------ ingest

    def append(self, records: Sequence[LiveRecord], attempts: int = 20, batch_id: str | None = None) -> int:
        """Check and append a batch; returns the id of its last event. A bad batch raises a BatchError
        and stores nothing; an acknowledged one is in Redis under its fsync policy. A `batch_id` already
        appended (within `BATCH_ID_TTL_S`) returns that batch's last id and appends nothing, checked
        again inside the script, so a client's retry or a retried script cannot append twice."""
        if not records:
            return self.last_event()
        once = f"{self.prefix}:batch:{batch_id or ''}"
        try:
            if batch_id is not None and (done := self.r.get(once)) is not None:
                return int(done)
        except redis.RedisError as exc:
            raise BrokerError(f"the broker at {self.url} refused the batch: {exc}") from exc
        rooms = sorted({r.id if isinstance(r, Room) else r.room for r in records})
        data = orjson.dumps([encode(r) for r in records])
        room_data = orjson.dumps([encode(r) for r in records if isinstance(r, Room | RoomEnd | Segment)])
        try:
            for _ in range(attempts):
                facts = dict(zip(rooms, self.r.hmget(self.roommeta, rooms)))
                after = check_batch(records, lambda room, facts=facts: _view(facts.get(room)))
                changed = [(room, _facts(v)) for room, v in after.items() if facts.get(room) is None
                           or _facts(v) != facts[room].decode()]
                args: list = [len(records), data, room_data if room_data != b"[]" else b"", len(rooms)]
                for room in rooms:
                    args += [room, facts[room] or b""]
                args += [len(changed)]
                for room, f in changed:
                    args += [room, f]
                args += [BATCH_ID_TTL_S]
                last, entry = self._append(keys=[self.seq, self.events, self.rooms, self.roommeta, once], args=args)
                if int(last) >= 0:
                    return int(last)
        except redis.RedisError as exc:
            raise BrokerError(f"the broker at {self.url} refused the batch: {exc}") from exc
        raise BrokerError(f"room {int(entry)}'s facts kept changing under concurrent writers ({attempts} attempts)")

    def last_event(self) -> int:
        return int(self.r.get(self.seq) or 0)

    def hold_lease(self, key: str, holder: str, ms: int) -> bool:
        """Take `key`'s lease for `holder` if free, or renew it if `holder` has it (for `ms`)."""
        return bool(self._lease(keys=[key], args=[holder, ms]))

    def dead_letter(self, stream: str, group: str, entry_id: str, reason: str, fields: dict) -> None:
        """Move an entry no worker can read to the dead-letter stream (with its reason and raw fields)
        and acknowledge it, in one transaction: the group goes on past it, an operator can inspect it."""
        pipe = self.r.pipeline(transaction=True)
        pipe.xadd(self.dead, {"stream": stream, "group": group, "id": entry_id, "reason": reason[:2000],
                              "fields": orjson.dumps({k.decode(): v.decode("utf-8", "replace")
                                                      for k, v in fields.items()})})
        pipe.xack(stream, group, entry_id)
        pipe.execute()

    # ------------------------------------------------------------------------------ reading

    def read_all(self, stream: str, after: str = "0", block_ms: int | None = None,
                 count: int = 256) -> list[tuple[str, dict]]:
        """Entries of `stream` after id `after` (no group: every reader sees all)."""
        out = self.r.xread({stream: after}, count=count, block=block_ms)
        return [(eid.decode(), fields) for _, entries in out for eid, fields in entries]

    def entries(self, stream: str, after: str = "0") -> Iterator[Entry]:
        """Every entry of a stream after id `after`, oldest first."""
        while True:
            batch = self.read_all(stream, after, count=1000)
            if not batch:
                return
            for eid, fields in batch:
                yield parse_entry(eid, fields)
            after = batch[-1][0]

    def ensure_group(self, stream: str, group: str) -> None:
        """Create consumer group `group` on `stream` from its first entry, unless it exists."""
        try:
            self.r.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def trim_behind_groups(self, stream: str) -> int:
        """Drop the entries every group of `stream` has acknowledged; returns how many went."""
        groups = self.r.xinfo_groups(stream)
        if not groups:
            return 0
        floor = None
        for g in groups:
            name = g["name"]
            pending = self.r.xpending(stream, name)
            if pending["pending"]:
                oldest = pending["min"].decode() if isinstance(pending["min"], bytes) else pending["min"]
            else:  # everything delivered is acknowledged: keep the entries after the last delivered one
                last = g["last-delivered-id"]
                last = last.decode() if isinstance(last, bytes) else last
                ms, seq = stream_id(last)
                oldest = f"{ms}-{seq + 1}"
            if floor is None or stream_id(oldest) < stream_id(floor):
                floor = oldest
        return int(self.r.xtrim(stream, minid=floor, approximate=False))


class Group:
    """One consumer of a consumer group on a stream: its own pending entries first (after a restart),
    then entries another consumer left idle for `claim_idle_ms` (XAUTOCLAIM), then new ones."""

    def __init__(self, broker: Broker, stream: str, group: str, consumer: str, claim_idle_ms: int = 10_000,
                 count: int = 64) -> None:
        self.b, self.stream, self.group, self.consumer = broker, stream, group, consumer
        self.claim_idle_ms, self.count = claim_idle_ms, count
        self._own_pending = True  # re-read what this consumer name holds before reading new entries
        self._next_claim = 0.0
        broker.ensure_group(stream, group)

    def read(self, block_ms: int = 200) -> list[Entry]:
        r = self.b.r
        if self._own_pending:
            got = r.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=self.count)
            entries = [(eid, f) for _, es in got for eid, f in es if f]
            if entries:
                return self._parse(entries)
            self._own_pending = False
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + self.claim_idle_ms / 4000
            claimed = self.claim()
            if claimed:
                return claimed
        got = r.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=self.count, block=block_ms)
        return self._parse([(eid, f) for _, es in got for eid, f in es])

    def claim(self, idle_ms: int | None = None) -> list[Entry]:
        """Take over entries other consumers of the group have left pending for `idle_ms` (default
        `claim_idle_ms`) or more, oldest first."""
        _, claimed, *_ = self.b.r.xautoclaim(self.stream, self.group, self.consumer,
                                             self.claim_idle_ms if idle_ms is None else idle_ms,
                                             start_id="0-0", count=self.count)
        return self._parse([(eid, f) for eid, f in claimed if f])

    def _parse(self, raw: list[tuple]) -> list[Entry]:
        """The entries that parse; the others go to the dead-letter stream with the reason."""
        out = []
        for eid, fields in raw:
            try:
                out.append(parse_entry(eid, fields))
            except (KeyError, ValueError, TypeError, IndexError, orjson.JSONDecodeError, DataError) as exc:
                eid = eid.decode() if isinstance(eid, bytes) else eid
                self.b.dead_letter(self.stream, self.group, eid, f"{type(exc).__name__}: {exc}", fields)
        return out

    def pending(self) -> int:
        return int(self.b.r.xpending(self.stream, self.group)["pending"])


def check_version(broker: Broker, version: str) -> None:
    """One tokenizer version per deployment: the first worker or replica sets it; others must match."""
    broker.r.set(broker.tokenizer_version, version, nx=True)
    have = broker.r.get(broker.tokenizer_version).decode()
    if have != version:
        raise DataError(f"the broker's SIDs are from tokenizer {have}; this process has {version}: "
                        "every worker and replica of a deployment must load the same tokenizer")
