"""Beam search constrained to the semantic IDs of rooms that are live now (OneLive §3).

At each level a beam may only continue with codes that some live room's SID has after the
beam's prefix (`LiveSnapshot.allowed_next`), so every finished beam is a live room's SID; SIDs
then map back to rooms (all rooms of a SID, so collisions stay reachable).

`constrained_beam_search(..., dense=False)` is the fast path: it scores only the allowed codes of
each beam. `dense=True` is the plain reference twin: it masks a full (beams x K) score matrix.
Both break ties the same way (score, then beam, then code), so they agree exactly; a parity test
checks this on random inputs.

Scorers decouple the search from the model: `start()` gives level-1 log-probabilities (1, K);
`extend(parents, codes)` continues beams (the i-th new beam is old beam `parents[i]` followed by
`codes[i]`) and gives the next level's log-probabilities (N, K).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from livemind.rec.generator import History, OneLiveGenerator
from livemind.rec.live_index import LiveSnapshot


class Scorer(Protocol):
    def start(self) -> np.ndarray:  # (1, K) log-probabilities of level 1
        ...

    def extend(self, parents: np.ndarray, codes: np.ndarray) -> np.ndarray:  # (N, K) of the next level
        ...


def constrained_beam_search(scorer: Scorer, snapshot: LiveSnapshot, beam: int,
                            dense: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(SIDs (M, L), log-probabilities (M,)) of up to `beam` live SIDs, best first."""
    if beam < 1:
        raise ValueError(f"beam must be at least 1, got {beam}")
    L = snapshot.levels
    if not len(snapshot.rooms):
        return np.zeros((0, L), dtype=np.int64), np.zeros(0)
    prefixes = np.zeros((1, 0), dtype=np.int64)
    scores = np.zeros(1)
    lp = np.asarray(scorer.start(), dtype=np.float64)
    for level in range(L):
        K = lp.shape[1]
        if dense:
            allowed = np.zeros((len(prefixes), K), dtype=bool)
            for i, p in enumerate(prefixes):
                allowed[i, snapshot.allowed_next(tuple(p.tolist()))] = True
            total = np.where(allowed, scores[:, None] + lp, -np.inf).ravel()  # (N * K,)
            order = np.argsort(-total, kind="stable")[:beam]
            order = order[np.isfinite(total[order])]
            parents, codes, new_scores = order // K, order % K, total[order]
        else:
            cand_parent, cand_code = [], []
            for i, p in enumerate(prefixes):
                nxt = snapshot.allowed_next(tuple(p.tolist()))
                cand_parent.append(np.full(len(nxt), i))
                cand_code.append(nxt)
            cp, cc = np.concatenate(cand_parent), np.concatenate(cand_code)
            cs = scores[cp] + lp[cp, cc]
            key = cp * K + cc  # flat position, the dense twin's tie-break
            order = np.lexsort((key, -cs))[:beam]
            parents, codes, new_scores = cp[order], cc[order], cs[order]
        prefixes = np.concatenate([prefixes[parents], codes[:, None]], axis=1)
        scores = new_scores
        if level + 1 < L:
            lp = np.asarray(scorer.extend(parents, codes), dtype=np.float64)
    return prefixes, scores


def rooms_from_sids(snapshot: LiveSnapshot, sids: np.ndarray, scores: np.ndarray, top_k: int) -> list[tuple[int, float]]:
    """Map SIDs (best first) to their live rooms; rooms sharing a SID share its score."""
    out: list[tuple[int, float]] = []
    for sid, s in zip(sids, scores):
        for room in snapshot.rooms_for(tuple(sid.tolist())):
            out.append((room, float(s)))
            if len(out) == top_k:
                return out
    return out


class GeneratorScorer:
    """Scores beams for one request with the generator, in its configured decode mode.

    MTP: the main stack runs once; each level is one light module over the shared KV cache.
    AR: each level re-runs the full stack with the chosen codes appended as tokens.
    """

    def __init__(self, model: OneLiveGenerator, hist: History) -> None:
        if hist.codes.shape[0] != 1:
            raise ValueError(f"a scorer serves one request, got a batch of {hist.codes.shape[0]}")
        self.model, self.hist = model, hist
        self.level = 1

    @torch.inference_mode()
    def start(self) -> np.ndarray:
        x, valid = self.model.embed(self.hist)
        self.x, self.valid = x, valid
        h, kv = self.model.main(x, valid)
        self.h, self.kv = h[:, -1], kv  # (1, d), shared KV (1, H, T+1, hd)
        self.codes = torch.zeros(1, 0, dtype=torch.long)
        self.level = 1
        return torch.log_softmax(self.model.level_logits(0, self.h), -1).numpy()

    @torch.inference_mode()
    def extend(self, parents: np.ndarray, codes: np.ndarray) -> np.ndarray:
        self.level += 1
        p, c = torch.from_numpy(parents), torch.from_numpy(codes)
        self.codes = torch.cat([self.codes[p], c[:, None]], dim=1)  # (N, level-1)
        n, lv = len(parents), self.level - 1
        if self.model.cfg.decode == "mtp":
            kv = tuple(t.expand(n, -1, -1, -1) for t in self.kv)
            self.h = self.model.mtp_step(self.level, self.h[p], c, kv, self.valid.expand(n, -1))
            return torch.log_softmax(self.model.level_logits(lv, self.h), -1).numpy()
        steps = [self.model.prev_emb[lv](self.codes[:, lv])[:, None, :] for lv in range(self.level - 1)]
        x = torch.cat([self.x.expand(n, -1, -1), *steps], dim=1)
        valid = torch.cat([self.valid.expand(n, -1), torch.ones(n, len(steps), dtype=torch.bool)], dim=1)
        h, _ = self.model.main(x, valid)
        return torch.log_softmax(self.model.level_logits(lv, h[:, -1]), -1).numpy()


def recommend(model: OneLiveGenerator, hist: History, snapshot: LiveSnapshot, top_k: int = 10,
              beam: int = 32) -> list[tuple[int, float]]:
    """Top-k live rooms for one viewer: constrained beam search, then SIDs -> rooms.

    Nothing live: an empty list. A viewer with no history (T = 0) is scored from [BOS] alone.
    """
    if not len(snapshot.rooms):
        return []
    model.eval()
    sids, scores = constrained_beam_search(GeneratorScorer(model, hist), snapshot, max(beam, top_k))
    return rooms_from_sids(snapshot, sids, scores, top_k)
