"""Logged feedback as training data for the reward model, and each viewer's state at any time.

`Impressions.from_world` turns the event log into one row per impression with what followed it:
click, watch seconds, like, comment, follow, gift, purchase. Click and watch carry the
impression's timestamp; likes, gifts and the rest happen later during the watch, so each is
credited to the latest clicked impression of the same (viewer, room) at or before it.

`ViewerState` answers "how many times had viewer v watched streamer s before t, and did v follow
s?" from the log alone, so the reward model and the A/B test see exactly what was known at t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from livemind.errors import DataError
from livemind.rec.data.segments import SegmentFrame
from livemind.rec.data.watch import WatchLog
from livemind.world.schema import EVENT_KINDS, EventBatch
from livemind.world.tables import WorldData

# What the reward model predicts per impression; names as in LiveWorld.expected.
OBJECTIVES: tuple[str, ...] = ("click", "watch_minutes", "like", "comment", "follow", "gift", "purchase")
AFTER_CLICK = ("like", "comment", "follow", "gift", "purchase")  # engagement events during the watch
_CODE = {k: EVENT_KINDS.index(k) for k in EVENT_KINDS}


def time_key(key: np.ndarray, time: np.ndarray, t0: float, span: float) -> np.ndarray:
    """One float64 sort key: integer key first, then time (exact: key * span < 2^53)."""
    return key.astype(np.float64) * span + np.clip(time - t0, 0.0, span - 1.0)


class ViewerState:
    """Past watches and follows of (viewer, streamer) pairs, as of any time, from an event log."""

    def __init__(self, events: EventBatch, room_streamer: np.ndarray, n_streamers: int) -> None:
        self.n_streamers = n_streamers
        self.t0 = float(events.time.min()) if len(events) else 0.0
        self.span = float(events.time.max() - self.t0 + 2.0) if len(events) else 2.0
        if n_streamers * (int(events.viewer.max()) + 1 if len(events) else 1) * self.span >= 2 ** 53:
            raise DataError("too many (viewer, streamer) pairs over this time span for one float64 key")
        self._watch = self._index(events, _CODE["watch"], room_streamer)
        self._follow = self._index(events, _CODE["follow"], room_streamer)

    def _index(self, ev: EventBatch, kind: int, room_streamer: np.ndarray) -> np.ndarray:
        sel = ev.kind == kind
        key = ev.viewer[sel] * self.n_streamers + room_streamer[ev.room[sel]]
        return np.sort(time_key(key, ev.time[sel], self.t0, self.span))

    def _count(self, index: np.ndarray, viewers: np.ndarray, streamers: np.ndarray, times: np.ndarray) -> np.ndarray:
        key = np.asarray(viewers, dtype=np.int64) * self.n_streamers + np.asarray(streamers, dtype=np.int64)
        lo = np.searchsorted(index, time_key(key, np.full(key.shape, self.t0), self.t0, self.span), "left")
        hi = np.searchsorted(index, time_key(key, np.broadcast_to(times, key.shape), self.t0, self.span), "left")
        return hi - lo

    def watches(self, viewers: np.ndarray, streamers: np.ndarray, times: np.ndarray | float) -> np.ndarray:
        """Number of watches of each streamer by each viewer strictly before each time, (N,) int."""
        return self._count(self._watch, viewers, streamers, times)

    def follows(self, viewers: np.ndarray, streamers: np.ndarray, times: np.ndarray | float) -> np.ndarray:
        """Whether each viewer followed each streamer strictly before each time, (N,) bool."""
        return self._count(self._follow, viewers, streamers, times) > 0

    @classmethod
    def from_world(cls, world: WorldData) -> ViewerState:
        rooms = world.rooms.sort_by("id")
        rid = rooms.column("id").to_numpy()
        if len(rid) and not np.array_equal(rid, np.arange(len(rid))):
            raise DataError("room ids must be 0..R-1 to index streamers by room")
        return cls(world.event_batch(), rooms.column("streamer").to_numpy(), int(world.streamers.num_rows))


def topic_share(watch_topic: np.ndarray | None, rows: np.ndarray, valid: np.ndarray, topics: np.ndarray) -> np.ndarray:
    """(N,) the fraction of each viewer's history watches (log rows and valid, (N, H), as
    `history_rows` gives them) whose segment had the topic `topics` (N,) (SegmentFrame.topic_ids;
    negative: none). `watch_topic`: the topic watched at each log row (`WatchLog.topic`; None:
    unknown, every share 0); 0 without history."""
    topics = np.asarray(topics, dtype=np.int64)
    if watch_topic is None:
        return np.zeros(len(topics))
    hits = (watch_topic[rows] == topics[:, None]) & valid
    return hits.sum(1) / np.maximum(valid.sum(1), 1)


def history_rows(log: WatchLog, viewers: np.ndarray, times: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Log rows of each viewer's last `length` watches strictly before each time, oldest first:
    rows (N, H) clipped into the log, valid (N, H)."""
    viewers = np.asarray(viewers, dtype=np.int64)
    times = np.broadcast_to(np.asarray(times, dtype=np.float64), viewers.shape)
    t0 = float(min(log.time.min(), times.min())) if len(times) else 0.0
    span = float(max(log.time.max(), times.max()) - t0 + 2.0) if len(times) else 2.0
    keys = time_key(log.viewer, log.time, t0, span)  # sorted: the log is by (viewer, time)
    pos = np.searchsorted(keys, time_key(viewers, times, t0, span), "left")
    start = np.searchsorted(log.viewer, viewers, "left")
    idx = pos[:, None] + np.arange(-length, 0)[None, :]  # (N, H)
    valid = idx >= start[:, None]
    return np.clip(idx, 0, max(len(log) - 1, 0)), valid


@dataclass
class Impressions:
    """One row per impression that has a segment on screen. Arrays are (N,) unless noted."""

    viewer: np.ndarray
    room: np.ndarray
    streamer: np.ndarray
    time: np.ndarray
    sid: np.ndarray  # (N, L) the room's SID at the impression
    watches: np.ndarray  # past watches of the streamer by the viewer
    follows: np.ndarray  # bool, viewer followed the streamer before
    topic: np.ndarray  # topic id (SegmentFrame.topic_ids) of the segment on screen
    labels: dict[str, np.ndarray]  # click, watch (seconds), like, comment, follow, gift, purchase: (N,) float
    tokenizer_version: str

    def __len__(self) -> int:
        return len(self.viewer)

    def take(self, rows: np.ndarray) -> Impressions:
        return Impressions(self.viewer[rows], self.room[rows], self.streamer[rows], self.time[rows], self.sid[rows],
                           self.watches[rows], self.follows[rows], self.topic[rows],
                           {k: v[rows] for k, v in self.labels.items()},
                           self.tokenizer_version)

    @classmethod
    def from_world(cls, world: WorldData, frame: SegmentFrame, codes: np.ndarray, version: str,
                   state: ViewerState | None = None) -> Impressions:
        ev = world.event_batch()
        imp = ev.take(np.flatnonzero(ev.kind == _CODE["impression"]))
        if not len(imp):
            raise DataError("the world has no impression events; the reward model learns from impressions")
        seg = frame.lookup(imp.room, imp.time)
        imp = imp.take(np.flatnonzero(seg >= 0))
        seg = seg[seg >= 0]
        n_rooms = int(ev.room.max()) + 1
        t0, span = float(ev.time.min()), float(ev.time.max() - ev.time.min() + 2.0)
        key = time_key(imp.viewer * n_rooms + imp.room, imp.time, t0, span)
        order = np.argsort(key, kind="stable")
        imp, seg, key = imp.take(order), seg[order], key[order]
        labels = {k: np.zeros(len(imp)) for k in ("click", "watch", *AFTER_CLICK)}
        clicked = np.arange(len(imp))
        for name in ("click", "watch", *AFTER_CLICK):
            # click and watch share the impression's time; the rest go to the latest *clicked*
            # impression of the same (viewer, room) at or before them (a later impression of the
            # same room may have gone unclicked while the viewer was still watching)
            rows = np.arange(len(imp)) if name == "click" else clicked
            e = ev.take(np.flatnonzero(ev.kind == _CODE[name]))
            j = np.searchsorted(key[rows], time_key(e.viewer * n_rooms + e.room, e.time, t0, span), "right") - 1
            jc = rows[np.maximum(j, 0)] if len(rows) else np.zeros(len(j), dtype=np.int64)
            ok = (j >= 0) & (imp.viewer[jc] == e.viewer) & (imp.room[jc] == e.room) if len(rows) else np.zeros(len(j), bool)
            np.add.at(labels[name], jc[ok], e.value[ok] if name == "watch" else 1.0)
            if name == "click":
                labels["click"] = np.minimum(labels["click"], 1.0)
                clicked = np.flatnonzero(labels["click"] > 0)
        for name in AFTER_CLICK:
            labels[name] = np.minimum(labels[name], 1.0)
        state = ViewerState.from_world(world) if state is None else state
        streamer = frame.streamer[seg]
        return cls(imp.viewer, imp.room, streamer, imp.time, codes[seg], state.watches(imp.viewer, streamer, imp.time),
                   state.follows(imp.viewer, streamer, imp.time), frame.topic_ids()[seg], labels, version)
