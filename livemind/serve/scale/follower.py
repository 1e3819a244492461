"""A recommender replica's live state, kept by following the broker's `applied` log.

The replica builds the same `LiveState` as the single-process service, from the same records in the
same order; only the SIDs come from the tokenizer workers (carried on each `applied` entry) instead
of an encoder in this process. `SidFeed` stands where the `DynamicTokenizer` stands in the state:
it hands out those SIDs in order and keeps the live index. So a replica answers `/v1/recommend`
exactly as the single-process service does on the same events, as soon as it has applied them.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence

from livemind.rec.live.index import SID, LiveIndex
from livemind.rec.live.state import LiveState
from livemind.serve.scale.broker import Broker, Entry, parse_entry, redis
from livemind.world.schema import Segment

log = logging.getLogger("livemind.follower")


class SidFeed:
    """The tokenizer as a replica's live state sees it: SIDs published by the tokenizer workers."""

    def __init__(self, levels: int, version: str) -> None:
        self.levels, self.version = levels, version
        self.index = LiveIndex(levels, version)
        self._next: list[SID] = []

    def give(self, sids: Sequence[Sequence[int]]) -> None:
        """The SIDs of the next segments to apply, in order."""
        self._next = [tuple(int(c) for c in s) for s in sids]

    def reset(self) -> None:
        self.index.replace_all({}, self.version)

    def start_room(self, room: int, streamer: int) -> None:
        pass

    def end_room(self, room: int) -> None:
        if room in self.index:
            self.index.remove(room)

    def update_many(self, segments: Sequence[Segment]) -> list[SID]:
        if len(segments) > len(self._next):
            raise RuntimeError(f"{len(segments)} segments to apply but {len(self._next)} SIDs from the broker")
        sids, self._next = self._next[:len(segments)], self._next[len(segments):]
        for s, sid in zip(segments, sids):
            self.index.upsert(s.room, sid)
        return sids


class Follower:
    """Applies `applied` entries to a live state in order; `applied` is the id of the last event applied.

    Snapshots: a follower with `snapshot_every` > 0 that holds the snapshot lease writes its state
    (`LiveState.dump`) to `{p}:snapshot` every `snapshot_every` events and trims `applied` behind the
    snapshot before; `catch_up` starts from the snapshot when there is one, so a new replica loads
    it and follows only what came after, and `applied` stays bounded."""

    def __init__(self, broker: Broker, state: LiveState, feed: SidFeed, snapshot_every: int = 0) -> None:
        self.b, self.state, self.feed = broker, state, feed
        self.snapshot_every = snapshot_every
        self.name = uuid.uuid4().hex  # this follower's name on the snapshot lease
        self.snapshot_at = 0  # events applied at this follower's last snapshot (or load)
        self.applied = 0
        self.error: str | None = None  # why the follower stopped (the replica is then not ready)
        self._after = "0"
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def apply(self, entry: Entry) -> None:
        if entry.first + len(entry.records) - 1 <= self.applied:
            return  # applied before
        if entry.first != self.applied + 1:
            raise RuntimeError(f"the applied log jumps from event {self.applied} to {entry.first}")
        self.feed.give(entry.sids or [])
        self.state.apply(entry.records)
        with self._cond:
            self.applied = entry.first + len(entry.records) - 1
            self._cond.notify_all()

    def catch_up(self, progress: Callable[[int], None] | None = None) -> int:
        """Load the latest snapshot, if any, then apply everything `applied` holds after it; returns
        the events the state holds."""
        snap = self.b.r.hmget(self.b.snapshot, ["entry", "applied", "data"])
        if snap[0] is not None and self.applied == 0:
            self.state.load(snap[2])
            with self._cond:
                self.applied = self.snapshot_at = int(snap[1])
            self._after = snap[0].decode()
        for entry in self.b.entries(self.b.applied, self._after):
            self.apply(entry)
            self._after = entry.id
            if progress:
                progress(self.applied)
        return self.applied

    def maybe_snapshot(self) -> bool:
        """Write a snapshot when `snapshot_every` events have been applied since the last one and this
        follower holds the lease; trim `applied` behind the previous snapshot. True when written."""
        if not self.snapshot_every or self.applied - self.snapshot_at < self.snapshot_every or self._after == "0":
            return False
        if not self.b.hold_lease(self.b.snapshot_lease, self.name, 60_000):
            self.snapshot_at = self.applied  # another replica snapshots; look again a period later
            return False
        prev = self.b.r.hget(self.b.snapshot, "entry")
        data = self.state.dump()  # this thread is the only writer: the state is as of self._after
        pipe = self.b.r.pipeline(transaction=True)
        pipe.hset(self.b.snapshot, mapping={"entry": self._after, "applied": self.applied, "data": data,
                                            "prev": prev or b"0-0"})
        if prev is not None:
            pipe.xtrim(self.b.applied, minid=prev.decode(), approximate=False)
        pipe.execute()
        self.snapshot_at = self.applied
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="livemind-follow", daemon=True)
        self._thread.start()

    def poll(self, block_ms: int | None = None) -> int:
        """Apply the entries after the last one applied (waiting up to `block_ms` for some), then
        snapshot if one is due; returns the events applied."""
        n = 0
        for eid, fields in self.b.read_all(self.b.applied, self._after, block_ms=block_ms):
            entry = parse_entry(eid, fields)
            self.apply(entry)
            self._after, n = eid, n + len(entry.records)
        self.maybe_snapshot()
        return n

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll(block_ms=100)
            except redis.RedisError:  # Redis away for a moment: the replica keeps serving what it has
                log.exception("reading the applied log failed; retrying")
                self._stop.wait(1.0)
            except Exception as exc:  # the state cannot go on from here: /readyz says so instead of serving stale
                log.exception("applying the applied log failed")
                self.error = f"{type(exc).__name__}: {exc}"
                return

    def wait(self, offset: int, timeout: float) -> bool:
        """Block until events up to `offset` are applied (False: not within `timeout` s)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.applied >= offset, timeout)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
