"""Offline evaluation of next-room prediction on a held-out later window.

For each target watch, the candidates are the rooms live at the request time; a ranker returns
rooms best first. Metrics: HR@{1,5,10}, NDCG@10 and MRR (1/rank within the returned list, 0 when
absent), split into all / new (the viewer never watched the target's streamer before) / repeat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from livemind.rec.beam import recommend
from livemind.rec.data import WatchLog
from livemind.rec.generator import OneLiveGenerator
from livemind.rec.live_index import LiveIndex, LiveSnapshot
from livemind.rec.room_signals import RoomSignals
from livemind.rec.segments import SegmentFrame
from livemind.world.tables import WorldData


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


class Ranker(Protocol):
    name: str

    def rank(self, log: WatchLog, row: int) -> list[int]:  # live rooms, best first
        ...


@dataclass
class GeneratorRanker:
    """The generator's constrained beam search; `signals` feeds its live-room prior when it has one."""

    model: OneLiveGenerator
    live: LiveRooms
    max_history: int
    top_k: int = 10
    beam: int = 32
    name: str = "OneLive"
    signals: RoomSignals | None = None

    def rank(self, log: WatchLog, row: int) -> list[int]:
        hist, _ = log.batch(np.array([row]), self.max_history)
        snap = self.live.snapshot(float(log.time[row]))
        sig = None
        if self.model.cfg.room_signals:
            if self.signals is None:
                raise ValueError(f"{self.name} has a live-room prior: pass signals=RoomSignals(...)")
            sig = self.signals.for_row(row, snap.rooms)
        return [r for r, _ in recommend(self.model, hist, snap, self.top_k, self.beam, sig)]


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


def evaluate(ranker: Ranker, log: WatchLog, rows: np.ndarray,
             progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, float]]:
    """{split: {metric: value}} over target rows, splits all / new / repeat (with counts `n`)."""
    ranks = np.zeros(len(rows))  # 0 = not returned
    with torch.inference_mode():
        for i, row in enumerate(rows):
            ranked = ranker.rank(log, int(row))
            target = int(log.room[row])
            ranks[i] = ranked.index(target) + 1 if target in ranked else 0
            if progress and i % 50 == 0:
                progress(i, len(rows))
    repeat = log.is_repeat(rows)
    out = {}
    for split, sel in (("all", np.ones(len(rows), dtype=bool)), ("new", ~repeat), ("repeat", repeat)):
        r = ranks[sel]
        hit = lambda k, r=r: float(np.mean((r > 0) & (r <= k))) if len(r) else float("nan")  # noqa: E731
        out[split] = {
            "n": int(sel.sum()), "hr@1": hit(1), "hr@5": hit(5), "hr@10": hit(10),
            "ndcg@10": float(np.mean(np.where((r > 0) & (r <= 10), 1.0 / np.log2(np.maximum(r, 1) + 1), 0.0))) if len(r) else float("nan"),
            "mrr": float(np.mean(np.where(r > 0, 1.0 / np.maximum(r, 1), 0.0))) if len(r) else float("nan"),
        }
    return out
