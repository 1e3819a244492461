"""The popularity baseline: live rooms ranked by their recent watches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from livemind.rec.data.watch import WatchLog
from livemind.rec.live.rooms import LiveRooms


@dataclass
class PopularityRanker:
    """Live rooms by watches in the last `window` seconds (ties: room id)."""

    live: LiveRooms
    window: float = 3600.0
    name: str = "popularity (live)"

    def rank(self, log: WatchLog, row: int) -> list[int]:
        return self.rank_at(log, float(log.time[row]))

    def rank_at(self, log: WatchLog, t: float) -> list[int]:
        """The rooms live at t, by watches in the `window` seconds before t."""
        rooms = self.live.rooms(t)
        counts = self.watches(log, rooms, t)
        return rooms[np.lexsort((rooms, -counts))].tolist()

    def watches(self, log: WatchLog, rooms: np.ndarray, t: float) -> np.ndarray:
        """Watches of each of `rooms` (ascending ids) in the `window` seconds before t."""
        recent = (log.time >= t - self.window) & (log.time < t)
        return np.bincount(np.searchsorted(rooms, log.room[recent][np.isin(log.room[recent], rooms)]),
                           minlength=len(rooms))
