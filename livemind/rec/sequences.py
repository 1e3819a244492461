"""The OneLive generator on plain item sequences (e.g. sasrec-games), under the SASRec protocol.

Such data has no content and no timestamps, so an item's semantic ID comes from behaviour alone:
residual k-means over item embeddings learned by a sequential model (SASRec's), one static SID
per item. Sequences become a `WatchLog` (time = position, no watch time) so the generator trains
with the same recipe as on the live world; `generator_scores` scores candidates by log P(SID).
Items sharing a SID share a score (ties count half in `livemind.rec.baselines`).
"""

from __future__ import annotations

import numpy as np
import torch

from livemind.rec.baselines import LeaveOneOut, ScoreFn
from livemind.rec.beam import recommend
from livemind.rec.data import WATCH, WatchLog
from livemind.rec.generator import History, OneLiveGenerator
from livemind.rec.live_index import LiveIndex
from livemind.rec.rq import ResidualQuantizer, RQConfig


def item_sids(item_vectors: np.ndarray, cfg: RQConfig) -> np.ndarray:
    """SIDs (n_items + 1, L) of items 1..n from their vectors (n_items + 1, d); row 0 (padding) is all 0."""
    x = np.ascontiguousarray(item_vectors[1:], dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    codes = ResidualQuantizer(cfg).fit(x).encode(x)
    return np.vstack([np.zeros((1, codes.shape[1]), dtype=codes.dtype), codes]).astype(np.int64)


def sequence_log(seqs: list[np.ndarray], sids: np.ndarray, version: str) -> WatchLog:
    """Training sequences (item ids, in order) as a WatchLog: time = position in the sequence."""
    lengths = np.array([len(s) for s in seqs])
    items = np.concatenate(seqs).astype(np.int64)
    viewer = np.repeat(np.arange(len(seqs)), lengths)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    first = np.repeat(starts, lengths)
    time = (np.arange(len(items)) - first).astype(np.float64)
    return WatchLog(viewer, items, items, time, np.zeros(len(items)), sids[items], first, version)


def generator_scores(model: OneLiveGenerator, sids: np.ndarray) -> ScoreFn:
    """A ScoreFn: log P(SID of each candidate) after each history (item ids, left-padded with 0)."""
    sid_t = torch.from_numpy(sids)
    H = model.cfg.max_history

    def score(seq: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        seq = seq[:, -H:]
        B, T = seq.shape
        valid = seq > 0
        hist = History(codes=sid_t[seq], kind=torch.full((B, T), WATCH, dtype=torch.long), watch=torch.zeros(B, T),
                       time=torch.zeros(B, T, dtype=torch.float64), valid=valid, now=torch.zeros(B, dtype=torch.float64))
        out = []
        for i in range(0, cand.shape[1], 128):  # bounded memory for full ranking
            out.append(model.sid_log_prob(hist, sid_t[cand[:, i:i + 128]]))
        return torch.cat(out, dim=1)

    return score


def training_rows(log: WatchLog) -> np.ndarray:
    """Every position with at least one earlier item in its sequence."""
    return log.examples(min_history=1)


def split_summary(split: LeaveOneOut) -> str:
    return f"{len(split.train):,} users, {len(split.target):,} test users, {split.n_items:,} items"


def generator_full_ranking(model: OneLiveGenerator, sids: np.ndarray, split: LeaveOneOut, max_len: int,
                           limit: int | None = None, beam: int = 50, seed: int = 0) -> dict[str, float]:
    """Full ranking the generative way: beam search constrained to the catalogue's SIDs, items the
    user already has removed, HR@10 / NDCG@10 of the target in what remains."""
    index = LiveIndex(sids.shape[1], "catalogue")
    for item in range(1, len(sids)):
        index.upsert(item, tuple(int(c) for c in sids[item]))
    snap = index.snapshot()
    rng = np.random.default_rng(seed)
    idx = np.arange(len(split.target)) if limit is None else rng.permutation(len(split.target))[:limit]
    ranks = np.zeros(len(idx))
    for i, r in enumerate(idx):
        hist_items = split.history[r][-min(max_len, model.cfg.max_history):]
        T = len(hist_items)
        hist = History(codes=torch.from_numpy(sids[hist_items][None]), kind=torch.full((1, T), WATCH, dtype=torch.long),
                       watch=torch.zeros(1, T), time=torch.zeros(1, T, dtype=torch.float64),
                       valid=torch.ones(1, T, dtype=torch.bool), now=torch.zeros(1, dtype=torch.float64))
        seen = set(split.history[r].tolist())
        ranked = [item for item, _ in recommend(model, hist, snap, top_k=beam, beam=beam) if item not in seen]
        t = int(split.target[r])
        ranks[i] = ranked.index(t) + 1 if t in ranked[:10] else np.inf
    hit = ranks <= 10
    return {"hr@10": float(hit.mean()), "ndcg@10": float(np.where(hit, 1.0 / np.log2(np.minimum(ranks, 1e9) + 1), 0.0).mean()),
            "n": int(len(idx))}
