"""Segments of a world in array form, and the lookup event -> segment on screen at that time.

OneLive tokenises the content a viewer saw *when* they saw it; every trainer needs "which segment
was room r showing at time t". `SegmentFrame` answers that for many events at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from livemind.errors import DataError
from livemind.world.tables import WorldData


@dataclass
class SegmentFrame:
    room: np.ndarray  # (N,) int64, segments sorted by (room, index)
    index: np.ndarray  # (N,) int64
    start_time: np.ndarray  # (N,) float64
    text: list[str]
    product: np.ndarray  # (N,) int64, -1 = chat
    topic: np.ndarray  # (N,) object: product category or "chat"
    streamer: np.ndarray  # (N,) int64, the room's streamer
    room_ids: np.ndarray  # (R,) rooms that have segments, ascending
    room_offset: np.ndarray  # (R,) first segment row of each room
    room_count: np.ndarray  # (R,)
    room_end: np.ndarray  # (R,) end_time of each room
    _key: tuple[np.ndarray, float, float] | None = field(default=None, init=False, repr=False, compare=False)
    _topic_ids: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_world(cls, world: WorldData) -> SegmentFrame:
        seg = world.segments.sort_by([("room", "ascending"), ("index", "ascending")])
        if seg.num_rows == 0:
            raise DataError("the world has no segments; the dynamic tokenizer needs segment text")
        room = seg.column("room").to_numpy()
        rooms = world.rooms
        rid = rooms.column("id").to_numpy()
        order = np.argsort(rid)
        rid_sorted = rid[order]
        pos = np.searchsorted(rid_sorted, room)
        if np.any(pos >= len(rid_sorted)) or np.any(rid_sorted[np.minimum(pos, len(rid_sorted) - 1)] != room):
            raise DataError("some segments belong to rooms missing from the rooms table")
        streamer = rooms.column("streamer").to_numpy()[order][pos]
        room_ids, room_offset, room_count = np.unique(room, return_index=True, return_counts=True)
        room_end = rooms.column("end_time").to_numpy()[order][np.searchsorted(rid_sorted, room_ids)]
        return cls(room, seg.column("index").to_numpy(), seg.column("start_time").to_numpy(),
                   seg.column("text").to_pylist(), seg.column("product").to_numpy(),
                   np.array(seg.column("topic").to_pylist(), dtype=object), streamer,
                   room_ids, room_offset, room_count, room_end)

    def __len__(self) -> int:
        return len(self.room)

    def lookup(self, rooms: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Row of the segment each room was showing at each time, (N,); -1 when none was."""
        rooms, times = np.asarray(rooms, dtype=np.int64), np.asarray(times, dtype=np.float64)
        r = np.searchsorted(self.room_ids, rooms)
        rc = np.minimum(r, len(self.room_ids) - 1)
        known = (r < len(self.room_ids)) & (self.room_ids[rc] == rooms)
        seg_key, t0, span = self.segment_key()
        # a time outside the world's span is clipped into it for the search only: before t0 it lands
        # before the room's first segment, after the last end it fails the end check below
        tq = np.clip(times, t0, t0 + span - 1.0)
        j = np.searchsorted(seg_key, rc * span + (tq - t0), side="right") - 1
        ok = known & (j >= self.room_offset[rc]) & (times < self.room_end[rc])
        return np.where(ok, j, -1)

    def topic_ids(self) -> np.ndarray:
        """(N,) int64: each segment's topic as its rank among the world's sorted topic names."""
        if self._topic_ids is None:
            _, ids = np.unique(self.topic.astype(str), return_inverse=True)
            self._topic_ids = ids.astype(np.int64)
        return self._topic_ids

    def topic_of(self, seg: np.ndarray, missing: int = -1) -> np.ndarray:
        """Topic ids of segment rows `seg` (lookup's answer); `missing` where seg is -1."""
        seg = np.asarray(seg)
        return np.where(seg >= 0, self.topic_ids()[np.maximum(seg, 0)], missing)

    def segment_key(self) -> tuple[np.ndarray, float, float]:
        """One sorted key over all segments, room rank first, then start time (exact in float64);
        built once (lookups happen per request in training and serving)."""
        if self._key is None:
            t0 = float(self.start_time.min()) - 1.0
            span = float(max(self.room_end.max(), self.start_time.max()) - t0 + 2.0)
            key = np.repeat(np.arange(len(self.room_ids)), self.room_count) * span + (self.start_time - t0)
            self._key = (key, t0, span)
        return self._key

    def pooled(self, x30: np.ndarray) -> np.ndarray:
        """xpool for every segment: the mean of its room's x30 up to and including it, (N, D)."""
        csum = np.cumsum(x30.astype(np.float64), axis=0)
        start = np.repeat(self.room_offset, self.room_count)
        before = np.where(start[:, None] > 0, csum[np.maximum(start - 1, 0)], 0.0)
        n = (np.arange(len(self.room)) - start + 1)[:, None]
        return ((csum - before) / n).astype(np.float32)
