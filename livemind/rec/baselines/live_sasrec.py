"""ID-based baselines on the same data and evaluation as OneLive, and the SASRec paper's protocol.

Live world (`livemind.rec.evaluate` protocol: rank the rooms live at the request time):
- `SASRecRanker` over room IDs. A room's persistent ID is its streamer's channel (one live
  session at a time per streamer): a session ID would be unseen at test time by construction.
  Plain SASRec trains with uniform negatives and ranks the live rooms by its scores.
- The availability-aware variant (LiveRec, Rappaz et al. 2021) trains with negatives drawn from
  the rooms live at the target's time and adds the repeat-consumption bias (`repeat_aware`).

SASRec paper protocol (`leave_one_out`, `evaluate_sampled`, `evaluate_full`): each user's last
item is the test target and the one before it the validation item; users with fewer than three
items only train. The test input is everything before the target; the target is ranked against
100 negatives drawn uniformly from items the user never interacted with (HR@10, NDCG@10), and
against the whole catalogue minus the user's history (full ranking). Ties count half.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from livemind.rec.data import WatchLog
from livemind.rec.evaluate import LiveRooms
from livemind.rec.sasrec import NegativeSampler, SASRec, SASRecConfig, pad_left, train_sasrec, uniform_negatives

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
        hist = log.streamer[max(first, row - self.model.cfg.max_len):row] + 1
        seq = torch.from_numpy(pad_left([hist], self.model.cfg.max_len))  # cold start: all padding
        cand = torch.from_numpy(self.live.streamer_of(rooms) + 1)[None]
        with torch.inference_mode():
            scores = self.model.score(seq, cand)[0].numpy()
        return rooms[np.lexsort((rooms, -scores))].tolist()


# ---------------------------------------------------------------------- the paper's protocol

@dataclass
class LeaveOneOut:
    train: list[np.ndarray]  # per user: items used for training
    users: np.ndarray  # users with a test target (index into train)
    history: list[np.ndarray]  # per test user: train + validation item, the test input
    target: np.ndarray  # per test user: the held-out last item
    n_items: int


def leave_one_out(seqs: dict[int, np.ndarray]) -> LeaveOneOut:
    """The SASRec split: last item -> test, second last -> validation, users with < 3 items train only."""
    train, users, history, target = [], [], [], []
    for i, (_, s) in enumerate(sorted(seqs.items())):
        if len(s) < 3:
            train.append(s)
            continue
        train.append(s[:-2])
        users.append(i)
        history.append(s[:-1])
        target.append(int(s[-1]))
    n_items = int(max(int(s.max()) for s in seqs.values()))
    return LeaveOneOut(train, np.array(users), history, np.array(target), n_items)


def ranking_metrics(rank: np.ndarray) -> dict[str, float]:
    """HR@10 / NDCG@10 of 1-based ranks (ties counted half, so possibly x.5; np.inf = not ranked)."""
    hit = rank <= 10
    return {"hr@10": float(hit.mean()), "ndcg@10": float(np.where(hit, 1.0 / np.log2(np.where(hit, rank, 1.0) + 1), 0.0).mean()),
            "n": int(len(rank))}


def eval_users(split: LeaveOneOut, limit: int | None, seed: int) -> np.ndarray:
    """Indices of the test users to evaluate: all, or a seeded sample of `limit`."""
    n = len(split.target)
    return np.arange(n) if limit is None else np.random.default_rng(seed).permutation(n)[:limit]


def evaluate_sampled(score: ScoreFn, split: LeaveOneOut, max_len: int, n_neg: int = 100, seed: int = 0,
                     batch: int = 256, limit: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """HR@10 / NDCG@10 of the target among `n_neg` uniform negatives the user never interacted with."""
    rng = np.random.default_rng(seed)
    idx = eval_users(split, limit, seed)
    ranks = np.zeros(len(idx))
    for b in range(0, len(idx), batch):
        rows = idx[b:b + batch]
        cands = np.zeros((len(rows), n_neg + 1), dtype=np.int64)
        for j, r in enumerate(rows):
            seen = set(split.history[r].tolist()) | {int(split.target[r])}
            negs: list[int] = []
            while len(negs) < n_neg:
                draw = rng.integers(1, split.n_items + 1, 2 * n_neg)
                negs.extend(int(x) for x in draw if int(x) not in seen)
            cands[j] = [split.target[r], *negs[:n_neg]]
        seq = torch.from_numpy(pad_left([split.history[r] for r in rows], max_len))
        with torch.inference_mode():
            s = score(seq, torch.from_numpy(cands)).numpy()
        ranks[b:b + len(rows)] = 1 + (s[:, 1:] > s[:, :1]).sum(1) + 0.5 * (s[:, 1:] == s[:, :1]).sum(1)
        if progress:
            progress(min(b + batch, len(idx)), len(idx))
    return ranking_metrics(ranks)


def evaluate_full(score: ScoreFn, split: LeaveOneOut, max_len: int, batch: int = 256, limit: int | None = None,
                  seed: int = 0) -> dict[str, float]:
    """HR@10 / NDCG@10 of the target against every item the user has not interacted with."""
    idx = eval_users(split, limit, seed)
    all_items = torch.arange(1, split.n_items + 1)
    ranks = np.zeros(len(idx))
    for b in range(0, len(idx), batch):
        rows = idx[b:b + batch]
        seq = torch.from_numpy(pad_left([split.history[r] for r in rows], max_len))
        with torch.inference_mode():
            s = score(seq, all_items.expand(len(rows), -1)).numpy()  # (B, n_items), column i = item i + 1
        for j, r in enumerate(rows):
            t = int(split.target[r]) - 1
            mask = np.zeros(split.n_items, dtype=bool)
            mask[split.history[r] - 1] = True
            mask[t] = False
            row = np.where(mask, -np.inf, s[j])
            ranks[b + j] = 1 + (row > row[t]).sum() + 0.5 * ((row == row[t]).sum() - 1)
    return ranking_metrics(ranks)
