"""A recommender replica's live state, kept by following the broker's `applied` log (issue 26).

The replica builds the same `LiveState` as the single-process service, from the same records in the
same order; only the SIDs come from the tokenizer workers (carried on each `applied` entry) instead
of an encoder in this process. `SidFeed` stands where the `DynamicTokenizer` stands in the state:
it hands out those SIDs in order and keeps the live index. So a replica answers `/v1/recommend`
exactly as the single-process service does on the same events, as soon as it has applied them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import redis

from livemind.rec.live.index import SID, LiveIndex
from livemind.rec.live.state import LiveState
from livemind.serve.broker import Broker, Entry, parse_entry
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
    """Applies `applied` entries to a live state in order; `applied` is the id of the last event applied."""

    def __init__(self, broker: Broker, state: LiveState, feed: SidFeed) -> None:
        self.b, self.state, self.feed = broker, state, feed
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
        """Apply everything `applied` holds now; returns the events applied."""
        n = 0
        for entry in self.b.entries(self.b.applied):
            self.apply(entry)
            self._after = entry.id
            n += len(entry.records)
            if progress:
                progress(n)
        return n

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="livemind-follow", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self.b.read_all(self.b.applied, self._after, block_ms=100)
            except redis.RedisError:  # Redis away for a moment: the replica keeps serving what it has
                log.exception("reading the applied log failed; retrying")
                self._stop.wait(1.0)
                continue
            try:
                for eid, fields in batch:
                    self.apply(parse_entry(eid, fields))
                    self._after = eid
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
