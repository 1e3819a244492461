"""The SASRec paper's evaluation protocol on public item sequences.

`leave_one_out`: each user's last item is the test target and the one before it the validation
item; users with fewer than three items only train. The test input is everything before the
target; `evaluate_sampled` ranks the target against 100 negatives drawn uniformly from items the
user never interacted with (HR@10, NDCG@10), `evaluate_full` against the whole catalogue minus the
user's history. Ties count half.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from livemind.rec.baselines.sasrec import pad_left

# (histories (B, T) item ids left-padded with 0, candidates (B, C)) -> scores (B, C)
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
