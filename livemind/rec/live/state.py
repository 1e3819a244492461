"""The live state OneLive decodes against, built incrementally from the live event stream.

Offline, a finished world is tokenised and indexed in one go (`WatchLog`, `RoomSignals`,
`LiveRooms`); live, the same facts arrive one event at a time. `LiveState` keeps, as of any time t:
- the rooms live at t and the SID each carries at t (each `segment` re-encodes its room through the
  dynamic tokenizer; the tokenizer's live index is the snapshot of "now");
- each viewer's watches with the SID the room had at the watch (the generator's history);
- the counts the live-room prior reads (a room's audience in the last window, a viewer's watches
  and follows of each streamer, the topics the viewer watched).

It answers the three inputs of `recommend` — `history`, `snapshot`, `signals` — with the same
builders the offline evaluation uses (`History.one`, `LiveIndex`, `signal_matrix`, the topic
share), so a replayed world gives the offline answers (benchmarks/serve_rec.py checks it).

What is accepted (`check`, before anything is stored):
- `room_start` of a room id never seen; `room_end` of a live room, not before its start;
- `segment` of a live room, with an index above its last one and a start time not before the
  room's start nor its previous segment's (segments of a room come in order);
- viewer events (impression .. purchase) on a room that has started, at a time within its live
  interval [start, end); in any order otherwise (late events are placed by their time); `watch`
  seconds and gift / purchase amounts non-negative and finite.
Everything else is refused, naming the event's position, field, value and what was expected.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson

from livemind.errors import DataError
from livemind.rec.data.feedback import topic_share
from livemind.rec.data.room_signals import SignalConfig, signal_matrix
from livemind.rec.data.watch import History
from livemind.rec.live.index import LiveIndex, LiveSnapshot
from livemind.rec.tokenizer.content import check_text
from livemind.rec.tokenizer.dynamic import DynamicTokenizer
from livemind.world.live_log import LiveRecord, RoomEnd, time_of
from livemind.world.schema import Event, EventKind, Room, Segment

_VALUE_KINDS = {EventKind.WATCH, EventKind.GIFT, EventKind.PURCHASE}


class BatchError(DataError):
    """One event of a batch is refused: where it is, which field, its value and what was expected."""

    def __init__(self, index: int, field: str, value: object, expected: str) -> None:
        self.index, self.field, self.value, self.expected = index, field, value, expected
        super().__init__(f"event {index}: {field} = {value!r}; expected {expected}; nothing from this batch was stored")


@dataclass
class RoomView:
    """The facts about a room that decide whether a record of it is accepted."""

    start: float
    end: float = math.inf  # inf: live
    last_index: int = -1  # its last segment's index (-1: none yet)
    last_time: float = -math.inf  # its last segment's start time


def check_batch(records: Sequence[LiveRecord], lookup: Callable[[int], RoomView | None]) -> dict[int, RoomView]:
    """Refuse the whole batch (a BatchError naming the first bad event) unless every record can be
    applied in order after the ones before it, the rooms being as `lookup` says before the batch.
    Returns the views of the rooms the batch touches as they are after it (the broker stores them)."""
    views: dict[int, RoomView | None] = {}

    def view(room: int) -> RoomView | None:
        if room not in views:
            v = lookup(room)
            views[room] = None if v is None else RoomView(v.start, v.end, v.last_index, v.last_time)
        return views[room]

    for i, r in enumerate(records):
        t = time_of(r)
        if not math.isfinite(t):
            raise BatchError(i, "start_time" if isinstance(r, Room | Segment) else "time", t, "a finite time in seconds")
        if isinstance(r, Room):
            if view(r.id) is not None:
                raise BatchError(i, "room", r.id, "a room id never started before (ids are not reused)")
            if r.streamer < 0:
                raise BatchError(i, "streamer", r.streamer, "a non-negative streamer id")
            views[r.id] = RoomView(t)
            continue
        v = view(r.room)
        if v is None:
            raise BatchError(i, "room", r.room, "a room started by an earlier room_start")
        if isinstance(r, RoomEnd):
            if v.end < math.inf:
                raise BatchError(i, "room", r.room, "a live room (this one has ended)")
            if t < v.start:
                raise BatchError(i, "time", t, f"not before the room's start {v.start:g}")
            v.end = t
        elif isinstance(r, Segment):
            if v.end < math.inf:
                raise BatchError(i, "room", r.room, "a live room (this one has ended)")
            if r.index <= v.last_index:
                raise BatchError(i, "index", r.index, f"above the room's last segment index {v.last_index}")
            if t < max(v.start, v.last_time):
                raise BatchError(i, "start_time", t, f"not before the room's start or its last segment "
                                                     f"({max(v.start, v.last_time):g})")
            try:
                check_text(r.text)
            except DataError as exc:
                raise BatchError(i, "text", r.text[:40] if isinstance(r.text, str) else r.text, str(exc)) from None
            v.last_index, v.last_time = int(r.index), t
        else:
            if not (v.start <= t < v.end):
                raise BatchError(i, "time", t, f"a time while room {r.room} is live ({v.start:g} .. {v.end:g})")
            if r.kind in _VALUE_KINDS and not (math.isfinite(r.value) and r.value >= 0):
                raise BatchError(i, "value", r.value, f"a non-negative number for a {r.kind.value}")
            if r.viewer < 0:
                raise BatchError(i, "viewer", r.viewer, "a non-negative viewer id")
    return {room: v for room, v in views.items() if v is not None}


@dataclass
class _RoomLog:
    streamer: int
    start: float
    end: float = math.inf
    title: str = ""
    seg_start: list[float] = field(default_factory=list)  # the room's segments, in order
    seg_index: list[int] = field(default_factory=list)
    seg_codes: list[tuple[int, ...]] = field(default_factory=list)
    seg_topic: list[int] = field(default_factory=list)
    seg_product: list[int] = field(default_factory=list)
    watch_times: list[float] = field(default_factory=list)  # sorted; watches on a segment (the audience)

    def segment_at(self, t: float) -> int:
        """Position of the segment shown at t (-1: none yet, or the room is not live at t)."""
        if not (self.start <= t < self.end):
            return -1
        return bisect.bisect_right(self.seg_start, t) - 1


@dataclass
class _ViewerLog:
    time: list[float] = field(default_factory=list)  # watches on a segment, sorted by time
    room: list[int] = field(default_factory=list)
    streamer: list[int] = field(default_factory=list)
    watch: list[float] = field(default_factory=list)
    sid: list[tuple[int, ...]] = field(default_factory=list)
    topic: list[int] = field(default_factory=list)
    watched: dict[int, list[float]] = field(default_factory=dict)  # streamer -> every watch time, sorted
    followed: dict[int, list[float]] = field(default_factory=dict)  # streamer -> follow times, sorted

    def insert(self, t: float, room: int, streamer: int, watch: float, sid: tuple[int, ...], topic: int) -> None:
        i = bisect.bisect_right(self.time, t)  # a late event goes where its time says; ties keep arrival order
        for col, v in ((self.time, t), (self.room, room), (self.streamer, streamer), (self.watch, watch),
                       (self.sid, sid), (self.topic, topic)):
            col.insert(i, v)


SNAPSHOT_FORMAT = "livemind-live-state/1"


class LiveState:
    """Rooms, segments (re-encoded into SIDs) and viewer activity of a live platform, as of any time.

    Writers (`apply`) are serialised by a lock; readers see each batch whole.
    """

    def __init__(self, tokenizer: DynamicTokenizer | None, signals: SignalConfig | None = None) -> None:
        """`tokenizer` None: rooms, cards and viewers only, no SIDs (a host-only service)."""
        if tokenizer is not None:
            tokenizer.reset()
        self.tokenizer = tokenizer
        self.signals = signals or SignalConfig()
        self.rooms: dict[int, _RoomLog] = {}
        self.viewers: dict[int, _ViewerLog] = {}
        self._topics: dict[str, int] = {}  # topic name -> id (only equality matters)
        self._lock = threading.RLock()
        self.events = 0  # records applied
        self.reencodes = 0  # segments re-encoded
        self.last_time = -math.inf  # latest time of a room or segment record: the live index is "now" after it
        self.latest = -math.inf  # latest time of any record: a request without a time is served then
        self._snap_cache: tuple[int, LiveSnapshot] | None = None
        self._version = 0  # bumped by every structural change

    # ------------------------------------------------------------------------------ checking

    def check(self, records: Sequence[LiveRecord]) -> None:
        """Refuse the whole batch (a BatchError naming the first bad event) unless every record can be
        applied in order after the ones before it; nothing changes either way."""
        with self._lock:
            check_batch(records, self.room_view)

    def room_view(self, room: int) -> RoomView | None:
        """What `check_batch` needs of a room (None: never started)."""
        log = self.rooms.get(room)
        if log is None:
            return None
        return RoomView(log.start, log.end, log.seg_index[-1] if log.seg_index else -1,
                        log.seg_start[-1] if log.seg_start else -math.inf)

    # ------------------------------------------------------------------------------ applying

    def apply(self, records: Sequence[LiveRecord]) -> None:
        """Apply a checked batch in order: rooms open and close, segments are re-encoded (one
        embedding call for all of the batch's segments), then viewer events extend histories."""
        pending: list[Segment] = []
        viewer_events: list[Event] = []
        with self._lock:
            for r in records:
                if isinstance(r, Room):
                    self._start(r)
                elif isinstance(r, Segment):
                    pending.append(r)
                elif isinstance(r, RoomEnd):
                    if any(s.room == r.room for s in pending):
                        self._encode(pending)
                        pending = []
                    self._end(r)
                else:
                    viewer_events.append(r)
            if pending:
                self._encode(pending)
            for e in viewer_events:
                self._viewer_event(e)
            self.events += len(records)
            if records:
                self.latest = max(self.latest, max(time_of(r) for r in records))

    def _start(self, r: Room) -> None:
        self.rooms[r.id] = _RoomLog(int(r.streamer), float(r.start_time), title=r.title)
        if self.tokenizer is not None:
            self.tokenizer.start_room(r.id, r.streamer)
        self._touch(r.start_time)

    def _end(self, r: RoomEnd) -> None:
        self.rooms[r.room].end = float(r.time)
        if self.tokenizer is not None:
            self.tokenizer.end_room(r.room)
        self._touch(r.time)

    def _encode(self, segments: list[Segment]) -> None:
        sids = self.tokenizer.update_many(segments) if self.tokenizer is not None else [None] * len(segments)
        for s, sid in zip(segments, sids):
            log = self.rooms[s.room]
            log.seg_start.append(float(s.start_time))
            log.seg_index.append(int(s.index))
            log.seg_codes.append(sid)
            log.seg_topic.append(self._topics.setdefault(s.topic, len(self._topics)))
            log.seg_product.append(int(s.product))
            self._touch(s.start_time)
        self.reencodes += len(segments)

    def _touch(self, t: float) -> None:
        self.last_time = max(self.last_time, float(t))
        self._version += 1

    def _viewer_event(self, e: Event) -> None:
        room = self.rooms[e.room]
        v = self.viewers.setdefault(int(e.viewer), _ViewerLog())
        t = float(e.time)
        if e.kind == EventKind.FOLLOW:
            bisect.insort(v.followed.setdefault(room.streamer, []), t)
        elif e.kind == EventKind.WATCH:
            bisect.insort(v.watched.setdefault(room.streamer, []), t)
            j = room.segment_at(t)
            if j >= 0:  # a watch of a room showing something: a history token and audience
                v.insert(t, int(e.room), room.streamer, float(e.value), room.seg_codes[j], room.seg_topic[j])
                bisect.insort(room.watch_times, t)

    # ------------------------------------------------------------------------------ reading

    def snapshot(self, t: float | None = None) -> LiveSnapshot:
        """The rooms live at t with the SID of the segment each shows at t (None: now)."""
        if self.tokenizer is None:
            raise DataError("this live state keeps no SIDs (no tokenizer): nothing to decode over")
        with self._lock:
            if t is None or t >= self.last_time:  # "now": the tokenizer's own live index
                return self.tokenizer.index.snapshot()
            index = LiveIndex(self.tokenizer.levels, self.tokenizer.version)
            for room, log in self.rooms.items():
                j = log.segment_at(t)
                if j >= 0:
                    index.upsert(room, log.seg_codes[j])
            return index.snapshot()

    def now(self) -> float:
        """The latest time of any event the state has seen (-inf: none yet)."""
        return self.latest

    def history(self, viewer: int, t: float, max_history: int) -> History:
        """The viewer's last `max_history` watches before t, as the generator reads them."""
        with self._lock:
            v = self.viewers.get(int(viewer))
            if self.tokenizer is None:
                raise DataError("this live state keeps no SIDs (no tokenizer): no generator history")
            L = self.tokenizer.levels
            if v is None:
                return History.one(np.zeros((0, L), dtype=np.int64), np.zeros(0), np.zeros(0), t)
            end = bisect.bisect_left(v.time, t)
            lo = max(0, end - max_history)
            return History.one(np.array(v.sid[lo:end], dtype=np.int64).reshape(end - lo, L),
                               np.array(v.watch[lo:end]), np.array(v.time[lo:end]), t)

    def signals_for(self, viewer: int, t: float, rooms: np.ndarray) -> np.ndarray:
        """(C, S) identity signals of live rooms `rooms` for a request by `viewer` at t."""
        cfg = self.signals
        with self._lock:
            logs = [self.rooms[int(r)] for r in rooms]
            streamers = np.array([g.streamer for g in logs], dtype=np.int64)
            audience = np.array([bisect.bisect_left(g.watch_times, t) - bisect.bisect_left(g.watch_times, t - cfg.window)
                                 for g in logs])
            segs = [g.segment_at(t) for g in logs]
            now_topic = np.array([g.seg_topic[j] if j >= 0 else -2 for g, j in zip(logs, segs)], dtype=np.int64)
            v = self.viewers.get(int(viewer))
            if v is None:
                zeros = np.zeros(len(rooms))
                return signal_matrix(audience, zeros, zeros, zeros, zeros)
            watches = np.array([bisect.bisect_left(v.watched.get(int(s), ()), t) for s in streamers])
            follows = np.array([bisect.bisect_left(v.followed.get(int(s), ()), t) > 0 for s in streamers])
            end = bisect.bisect_left(v.time, t)
            last = v.streamer[end - 1] if end > 0 else -1
            lo = max(0, end - cfg.history)
            topics = np.array(v.topic[lo:end] or [-1], dtype=np.int64)
            H = end - lo
            rows = np.broadcast_to(np.arange(max(H, 1)), (len(rooms), max(H, 1)))
            valid = np.broadcast_to(np.arange(max(H, 1)) < H, rows.shape)
            share = topic_share(topics, rows, valid, now_topic)
            return signal_matrix(audience, watches, follows, streamers == last, share)

    def room_info(self, room: int, t: float | None = None) -> dict:
        """What the service shows of a room: streamer, since, and at t (None: now) its SID and product."""
        with self._lock:
            log = self.rooms.get(int(room))
            if log is None:
                raise DataError(f"room {room} is unknown")
            j = len(log.seg_start) - 1 if t is None else log.segment_at(t)
            return {"room": int(room), "streamer": log.streamer, "since": log.start, "title": log.title,
                    "live": log.end == math.inf, "sid": list(log.seg_codes[j]) if j >= 0 and log.seg_codes[j] else None,
                    "product": log.seg_product[j] if j >= 0 else None,
                    "segment": log.seg_index[j] if j >= 0 else None}

    def audience(self, rooms: Sequence[int], t: float) -> list[int]:
        """Watches of each room in the `signals.window` seconds before t: its viewers now."""
        w = self.signals.window
        with self._lock:
            return [bisect.bisect_left(g.watch_times, t) - bisect.bisect_left(g.watch_times, t - w)
                    for g in (self.rooms[int(r)] for r in rooms)]

    def live_now(self) -> list[int]:
        """Rooms live now (started, not ended) that have shown a segment, ascending."""
        with self._lock:
            return sorted(r for r, g in self.rooms.items() if g.end == math.inf and g.seg_start)

    # ------------------------------------------------------------------------------ snapshots

    def dump(self) -> bytes:
        """The whole state as JSON (no pickle: a snapshot is data, loadable by anyone): rooms,
        viewers, topics and counters. With `load` on a new state over the same SIDs, it answers
        every read exactly as this one."""
        inf = lambda x: None if math.isinf(x) else x  # noqa: E731 (JSON has no infinity)
        with self._lock:
            return orjson.dumps({
                "format": SNAPSHOT_FORMAT, "events": self.events, "reencodes": self.reencodes,
                "last_time": inf(self.last_time), "latest": inf(self.latest), "topics": self._topics,
                "rooms": {str(r): {**dataclasses.asdict(g), "end": inf(g.end)} for r, g in self.rooms.items()},
                "viewers": {str(v): {**dataclasses.asdict(g), "watched": {str(k): t for k, t in g.watched.items()},
                                     "followed": {str(k): t for k, t in g.followed.items()}}
                            for v, g in self.viewers.items()}})

    def load(self, data: bytes) -> None:
        """Replace this (new) state's contents by a `dump`'s; the tokenizer's live index is rebuilt
        from the rooms live with a segment (their last SID), as applying the records would leave it.
        For a replica's state, whose SIDs are fed to it (`serve.follower.SidFeed`): a dynamic
        tokenizer's own per-room content state is not in a snapshot."""
        d = orjson.loads(data)
        if not isinstance(d, dict) or d.get("format") != SNAPSHOT_FORMAT:
            raise DataError(f"not a live-state snapshot of format {SNAPSHOT_FORMAT!r}")
        tup = lambda xs: [tuple(x) if x is not None else None for x in xs]  # noqa: E731
        with self._lock:
            self.events, self.reencodes = int(d["events"]), int(d["reencodes"])
            self.last_time = -math.inf if d["last_time"] is None else float(d["last_time"])
            self.latest = -math.inf if d["latest"] is None else float(d["latest"])
            self._topics = {str(k): int(v) for k, v in d["topics"].items()}
            self.rooms = {int(r): _RoomLog(**{**g, "end": math.inf if g["end"] is None else g["end"],
                                              "seg_codes": tup(g["seg_codes"])}) for r, g in d["rooms"].items()}
            self.viewers = {int(v): _ViewerLog(**{**g, "sid": tup(g["sid"]),
                                                  "watched": {int(k): t for k, t in g["watched"].items()},
                                                  "followed": {int(k): t for k, t in g["followed"].items()}})
                            for v, g in d["viewers"].items()}
            if self.tokenizer is not None:
                self.tokenizer.index.replace_all({r: g.seg_codes[-1] for r, g in self.rooms.items()
                                                  if g.end == math.inf and g.seg_codes and g.seg_codes[-1]},
                                                 self.tokenizer.version)
            self._snap_cache = None
            self._version += 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"events": self.events, "reencodes": self.reencodes,
                    "live_rooms": sum(1 for g in self.rooms.values() if g.end == math.inf),
                    "rooms": len(self.rooms), "viewers": len(self.viewers)}

