"""The rooms live at any time of a recorded world, with the SID each carries then.

`LiveRooms` answers "which rooms are live at t, and with which SID" for a finished world (training,
offline evaluation, alignment, the simulated A/B); `LiveSnapshot` (live/index.py) is the read-only
view that constrained decoding reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from livemind.rec.live.index import LiveIndex, LiveSnapshot
from livemind.world.tables import WorldData

if TYPE_CHECKING:  # a frame is passed in; live state never builds one
    from livemind.rec.data.segments import SegmentFrame


class LiveRooms:
    """Rooms live at any time t, with the SID each carries at t (for constrained decoding)."""

    def __init__(self, world: WorldData, frame: SegmentFrame, codes: np.ndarray, version: str) -> None:
        self.frame, self.codes, self.version = frame, codes, version
        rooms = world.rooms.sort_by("id")
        self.room = rooms.column("id").to_numpy()
        self.streamer = rooms.column("streamer").to_numpy()
        self.start = rooms.column("start_time").to_numpy()
        self.end = rooms.column("end_time").to_numpy()
        self.streamers_total = int(world.streamers.num_rows)
        self._snapshots: dict[float, LiveSnapshot] = {}  # evaluation asks for the same times again

    def streamer_of(self, rooms: np.ndarray) -> np.ndarray:
        """Streamer (the room's persistent channel id) of each room."""
        return self.streamer[np.searchsorted(self.room, rooms)]

    def rooms(self, t: float) -> np.ndarray:
        """Ids of the rooms live at t, ascending (self.room is sorted)."""
        return self.room[(self.start <= t) & (t < self.end)]

    def live_segments(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Rooms live at t that have a segment at t, and that segment's row."""
        rooms = self.rooms(t)
        seg = self.frame.lookup(rooms, np.full(len(rooms), t))
        return rooms[seg >= 0], seg[seg >= 0]

    def live_codes(self, t: float) -> np.ndarray:
        """SIDs (n, L) of the rooms live at t (rooms without a segment at t left out)."""
        return self.codes[self.live_segments(t)[1]]

    def allowed(self, times: np.ndarray, target: np.ndarray, codebook_size: int) -> np.ndarray:
        """(B, L, K) bool: at each level, the codes that continue target[:l] among the rooms live at times[b]."""
        B, L = target.shape
        out = np.zeros((B, L, codebook_size), dtype=bool)
        for b in range(B):
            codes = self.live_codes(float(times[b]))
            keep = np.ones(len(codes), dtype=bool)
            for lv in range(L):
                out[b, lv, codes[keep, lv]] = True
                keep &= codes[:, lv] == target[b, lv]
        return out

    def snapshot(self, t: float) -> LiveSnapshot:
        if t in self._snapshots:
            return self._snapshots[t]
        index = LiveIndex(self.codes.shape[1], self.version)
        for room, s in zip(*self.live_segments(t)):
            index.upsert(int(room), tuple(int(c) for c in self.codes[s]))
        if len(self._snapshots) >= 100_000:
            self._snapshots.clear()
        self._snapshots[t] = snap = index.snapshot()
        return snap
