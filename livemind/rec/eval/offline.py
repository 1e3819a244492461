"""Offline evaluation of next-room prediction on a held-out later window.

For each target watch, the candidates are the rooms live at the request time; a ranker returns
rooms best first, knowing only what happened strictly before that time (half the watches of the
simulated world share their instant with another watch of the same visit: those are not history). Metrics: HR@{1,5,10}, NDCG@10 and MRR (1/rank within the returned list, 0 when
absent), split into all / new (the viewer never watched the target's streamer before) / repeat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from livemind.rec.data.room_signals import RoomSignals
from livemind.rec.data.watch import WatchLog
from livemind.rec.live.rooms import LiveRooms
from livemind.rec.model.beam import recommend
from livemind.rec.model.generator import OneLiveGenerator


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
        recs = recommend_at(self.model, log, self.live, self.signals, int(log.viewer[row]), float(log.time[row]),
                            self.top_k, self.beam)
        return [r for r, _ in recs]


def recommend_at(model: OneLiveGenerator, log: WatchLog, live: LiveRooms, signals: RoomSignals | None, viewer: int,
                 t: float, top_k: int = 10, beam: int = 32) -> list[tuple[int, float]]:
    """A request of a recorded world as the live service gets it: the viewer's watches strictly before t
    (a watch at the same instant, another room of the same visit, is not known yet), the rooms live
    at t, and their signals for the live-room prior, decoded by `recommend`."""
    hist = log.history_at(viewer, t, model.cfg.max_history)
    snap = live.snapshot(t)
    sig = None
    if model.cfg.room_signals:
        if signals is None:
            raise ValueError("this generator has a live-room prior: pass signals=RoomSignals(...)")
        sig = signals.for_request(viewer, t, snap.rooms)
    return recommend(model, hist, snap, top_k, beam, sig)


def evaluate(ranker: Ranker, log: WatchLog, rows: np.ndarray,
             progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, float]]:
    """{split: {metric: value}} over target rows, splits all / new / repeat (with counts `n`)."""
    return metrics(target_ranks(ranker, log, rows, progress), log.is_repeat(rows))


def target_ranks(ranker: Ranker, log: WatchLog, rows: np.ndarray,
                 progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """The rank (1-based) of each target's room in the ranker's list; 0 when it is not in it."""
    ranks = np.zeros(len(rows))  # 0 = not returned
    with torch.inference_mode():
        for i, row in enumerate(rows):
            ranked = ranker.rank(log, int(row))
            target = int(log.room[row])
            ranks[i] = ranked.index(target) + 1 if target in ranked else 0
            if progress and i % 50 == 0:
                progress(i, len(rows))
    return ranks


def metrics(ranks: np.ndarray, repeat: np.ndarray) -> dict[str, dict[str, float]]:
    """{split: {metric: value}} from `target_ranks`, splits all / new / repeat (`repeat`: per target)."""
    out = {}
    for split, sel in (("all", np.ones(len(ranks), dtype=bool)), ("new", ~repeat), ("repeat", repeat)):
        r = ranks[sel]
        hit = lambda k, r=r: float(np.mean((r > 0) & (r <= k))) if len(r) else float("nan")  # noqa: E731
        out[split] = {
            "n": int(sel.sum()), "hr@1": hit(1), "hr@5": hit(5), "hr@10": hit(10),
            "ndcg@10": float(np.mean(np.where((r > 0) & (r <= 10), 1.0 / np.log2(np.maximum(r, 1) + 1), 0.0))) if len(r) else float("nan"),
            "mrr": float(np.mean(np.where(r > 0, 1.0 / np.maximum(r, 1), 0.0))) if len(r) else float("nan"),
        }
    return out
