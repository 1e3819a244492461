"""SASRec baselines on the live world, evaluated like OneLive (`livemind.rec.eval.offline`: rank the
rooms live at the request time):
- `SASRecRanker` over room IDs. A room's persistent ID is its streamer's channel (one live
  session at a time per streamer): a session ID would be unseen at test time by construction.
  Plain SASRec trains with uniform negatives and ranks the live rooms by its scores.
- The availability-aware variant (LiveRec, Rappaz et al. 2021) trains with negatives drawn from
  the rooms live at the target's time and adds the repeat-consumption bias (`repeat_aware`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from livemind.rec.baselines.sasrec import (
    NegativeSampler,
    SASRec,
    SASRecConfig,
    pad_left,
    train_sasrec,
    uniform_negatives,
)
from livemind.rec.data.watch import WatchLog
from livemind.rec.live.rooms import LiveRooms

# (histories (B, T) item ids left-padded with 0, candidates (B, C)) -> scores (B, C)
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------- live world

def viewer_sequences(log: WatchLog, end: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per viewer: streamer ids + 1 of watches before `end`, and their times."""
    keep = log.time < end
    viewer, item, time = log.viewer[keep], log.streamer[keep] + 1, log.time[keep]
    bounds = np.flatnonzero(np.diff(viewer)) + 1
    return np.split(item, bounds), np.split(time, bounds)


def live_negatives(live: LiveRooms, times: np.ndarray, step: float = 300.0) -> NegativeSampler:
    """LiveRec's availability-aware sampler: a negative is a room live when its positive was watched.

    `times` (N, T) holds the target time of each training position (aligned with the padded
    positives). Live sets are precomputed on a `step`-second grid; the slot containing t stands
    for t (a room ending inside the slot may still be drawn, which is harmless).
    """
    t0 = float(np.nanmin(np.where(times > 0, times, np.nan)))
    grid = t0 + step * np.arange(int((np.nanmax(times) - t0) // step) + 2)
    lists = [live.streamer_of(live.rooms(t)) + 1 for t in grid]
    offsets = np.r_[0, np.cumsum([len(x) for x in lists])]
    flat = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)
    uniform = uniform_negatives(int(live.streamers_total))

    def sample(rng: np.random.Generator, pos: np.ndarray, rows: np.ndarray) -> np.ndarray:
        t = times[rows][:, 1:]  # (B, T) target times
        slot = np.clip(((t - t0) // step).astype(np.int64), 0, len(grid) - 1)
        lo, n = offsets[slot], offsets[slot + 1] - offsets[slot]
        k = (rng.random(pos.shape) * np.maximum(n, 1)).astype(np.int64)
        neg = np.where(n > 0, flat[np.minimum(lo + k, len(flat) - 1)], 0)
        clash = (neg == pos) & (n > 1)  # the positive itself: take the next live room of the slot
        neg[clash] = flat[lo[clash] + (k[clash] + 1) % n[clash]]
        empty = (neg == 0) | (neg == pos)  # nothing else live: the paper's uniform draw
        neg[empty] = uniform(rng, pos[empty], rows)
        return neg

    return sample


def live_sasrec_config(n_items: int, max_len: int, epochs: int = 8, repeat_aware: bool = False) -> SASRecConfig:
    """SASRec on the live world: wider (64) and lighter dropout (0.2) than the paper's sparse Amazon settings."""
    return SASRecConfig(n_items=n_items, d_model=64, max_len=max_len, dropout=0.2, epochs=epochs,
                        repeat_aware=repeat_aware)


def train_live_sasrec(log: WatchLog, live: LiveRooms, split: float, cfg: SASRecConfig,
                      availability_aware: bool,
                      progress: Callable[[int, int, float], None] | None = None) -> tuple[SASRec, list[float]]:
    """SASRec on watches before `split`; the availability-aware variant also uses live negatives."""
    items, times = viewer_sequences(log, split)
    sampler = None
    if availability_aware:
        sampler = live_negatives(live, pad_left(times, cfg.max_len + 1, np.float64))
    return train_sasrec(cfg, items, sampler, progress)


@dataclass
class SASRecRanker:
    """Ranks the rooms live at the request time by SASRec's scores of their streamers."""

    model: SASRec
    live: LiveRooms
    name: str = "SASRec (room IDs)"

    def rank(self, log: WatchLog, row: int) -> list[int]:
        t = float(log.time[row])
        rooms = self.live.rooms(t)
        if not len(rooms):
            return []
        first = int(log.first[row])
        before = first + int(np.searchsorted(log.time[first:row], t, "left"))  # strictly before t, as served
        hist = log.streamer[max(first, before - self.model.cfg.max_len):before] + 1
        seq = torch.from_numpy(pad_left([hist], self.model.cfg.max_len))  # cold start: all padding
        cand = torch.from_numpy(self.live.streamer_of(rooms) + 1)[None]
        with torch.inference_mode():
            scores = self.model.score(seq, cand)[0].numpy()
        return rooms[np.lexsort((rooms, -scores))].tolist()
