"""The OneLive generator on plain item sequences (e.g. sasrec-games), under the SASRec protocol.

Such data has no content and no timestamps, so an item's semantic ID comes from behaviour alone:
residual k-means over item embeddings learned by a sequential model (SASRec's), one static SID
per item. Sequences become a `WatchLog` (time = position, no watch time) so the generator trains
with the same recipe as on the live world; `generator_scores` scores candidates by log P(SID).
Items sharing a SID share a score (ties count half in `livemind.rec.eval.protocol`).
"""

from __future__ import annotations

import numpy as np
import torch

from livemind.rec.baselines.live_sasrec import ScoreFn
from livemind.rec.baselines.sasrec import pad_left
from livemind.rec.data.watch import WATCH, History, WatchLog
from livemind.rec.eval.protocol import LeaveOneOut, eval_users, ranking_metrics
from livemind.rec.live.index import LiveIndex
from livemind.rec.model.beam import recommend
from livemind.rec.model.generator import OneLiveGenerator
from livemind.rec.tokenizer.rq import ResidualQuantizer, RQConfig


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


def item_history(seq: torch.Tensor, sids: torch.Tensor) -> History:
    """Histories of item ids seq (B, T), left-padded with 0, as generator input: no time, no watch time."""
    B, T = seq.shape
    return History(codes=sids[seq], kind=torch.full((B, T), WATCH, dtype=torch.long), watch=torch.zeros(B, T),
                   time=torch.zeros(B, T, dtype=torch.float64), valid=seq > 0, now=torch.zeros(B, dtype=torch.float64))


def generator_scores(model: OneLiveGenerator, sids: np.ndarray) -> ScoreFn:
    """A ScoreFn: log P(SID of each candidate) after each history (item ids, left-padded with 0)."""
    sid_t = torch.from_numpy(sids)
    H = model.cfg.max_history

    def score(seq: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        hist = item_history(seq[:, -H:], sid_t)
        out = []
        for i in range(0, cand.shape[1], 128):  # bounded memory for full ranking
            out.append(model.sid_log_prob(hist, sid_t[cand[:, i:i + 128]]))
        return torch.cat(out, dim=1)

    return score


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
    sid_t = torch.from_numpy(sids)
    H = min(max_len, model.cfg.max_history)
    idx = eval_users(split, limit, seed)
    ranks = np.full(len(idx), np.inf)  # inf: not in the top 10
    for i, r in enumerate(idx):
        hist = item_history(torch.from_numpy(pad_left([split.history[r]], H)), sid_t)
        seen = set(split.history[r].tolist())
        ranked = [item for item, _ in recommend(model, hist, snap, top_k=beam, beam=beam) if item not in seen]
        t = int(split.target[r])
        if t in ranked[:10]:
            ranks[i] = ranked.index(t) + 1
    return ranking_metrics(ranks)
