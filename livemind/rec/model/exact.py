"""Every live room scored: the constrained search without pruning, for when the live rooms are few.

A room's score is the beam search's (Σ_l w_l x log P(level l of its SID | the levels before) + its
prior), computed for every live room instead of for the SIDs a beam of `beam` keeps. The rooms of
one request share SID prefixes, so each level's log-probabilities are computed once per distinct
prefix, and the MTP steps of every request of a batch run as one model call per level. A beam that
keeps every SID ranks as this does; a narrower one may prune a room this would rank, never the
reverse. What it costs: a model row per distinct prefix and level, against the beam's `beam` rows a
level and its bookkeeping (measured in docs/history.md, the service section). The reference twin
is `OneLiveGenerator.room_scores`, one row per room (tests/rec/model/test_exact.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from livemind.rec.data.watch import History
from livemind.rec.live.index import LiveSnapshot
from livemind.rec.model.generator import Encoding, OneLiveGenerator


class Prefixes(NamedTuple):
    """The distinct SID prefixes of a snapshot's rooms, level by level (length m = 1 .. L-1):
    `of_room[m-1]` (n,) the prefix index of each room, `parent[m-1]` (U_m,) each prefix's index at
    length m-1 (0 at length 1: the empty prefix), `code[m-1]` (U_m,) its last code."""

    of_room: list[np.ndarray]
    parent: list[np.ndarray]
    code: list[np.ndarray]


def sid_prefixes(codes: np.ndarray) -> Prefixes:
    """`Prefixes` of SIDs codes (n, L), from one lexicographic sort."""
    n, L = codes.shape
    order = np.lexsort(codes.T[::-1])
    s = codes[order]
    # new[i, m-1]: the i-th sorted SID starts a new prefix of length m (it differs in one of the first m codes)
    new = np.logical_or.accumulate(s[1:] != s[:-1], axis=1) if n > 1 else np.zeros((0, L), dtype=bool)
    of_room, parent, code = [], [], []
    prev = np.zeros(n, dtype=np.int64)  # every room's prefix index at length 0
    for m in range(1, L):
        ids = np.concatenate([[0], np.cumsum(new[:, m - 1])])[:n].astype(np.int64)  # per sorted room
        first = np.concatenate([[0], np.flatnonzero(new[:, m - 1]) + 1])[:n]  # first sorted room of each prefix
        idx = np.empty(n, dtype=np.int64)
        idx[order] = ids
        parent.append(prev[order][first])
        code.append(s[first, m - 1])
        of_room.append(idx)
        prev = idx
    return Prefixes(of_room, parent, code)


def _prefixes(snapshot: LiveSnapshot) -> Prefixes:
    cached = snapshot.__dict__.get("_prefixes")  # a snapshot is read-only: its prefixes never change
    if cached is None:
        cached = sid_prefixes(np.asarray(snapshot.codes, dtype=np.int64))
        object.__setattr__(snapshot, "_prefixes", cached)
    return cached


@torch.inference_mode()
def live_room_scores(model: OneLiveGenerator, hists: Sequence[History], snapshots: Sequence[LiveSnapshot],
                     priors: Sequence[np.ndarray | None], enc: Encoding | None = None) -> list[np.ndarray]:
    """Each request's score (n,) of every room of its snapshot, float64: Σ_l w_l x log P(level l | the
    levels before) + its prior (`priors[b]`, or none). The weights are `model.lp_weight()`; `enc`: the
    histories' `model.encode`, when the caller has it (MTP)."""
    weight = model.lp_weight().double().cpu().numpy()
    ns = [len(s.rooms) for s in snapshots]
    out = [np.zeros(n) for n in ns]  # Σ_l w_l log P, level by level in float64 as the beam search sums it
    if ns and max(ns):
        _add_level_scores(model, hists, snapshots, weight, out, enc)
    return [o if p is None else o + np.asarray(p, dtype=np.float64) for o, p in zip(out, priors)]


def _add_level_scores(model: OneLiveGenerator, hists: Sequence[History], snapshots: Sequence[LiveSnapshot],
                      weight: np.ndarray, out: list[np.ndarray], enc: Encoding | None) -> None:
    B, L, dev = len(hists), model.cfg.levels, model.device
    ns = [len(s.rooms) for s in snapshots]
    codes = [np.asarray(s.codes, dtype=np.int64) for s in snapshots]
    if model.cfg.decode != "mtp":  # AR: the full stack per (history, room), as the model scores candidates
        C = max(ns)
        cand = np.zeros((B, C, L), dtype=np.int64)
        for b, c in enumerate(codes):
            cand[b, :len(c)] = c
        lp = model.sid_level_log_probs(History.stack(list(hists)), torch.from_numpy(cand)).double().cpu().numpy()
        for b, n in enumerate(ns):
            for m in range(L):
                out[b] += weight[m] * lp[b, :n, m]
        return
    pre = [_prefixes(s) for s in snapshots]
    h, kv, valid = enc if enc is not None else model.encode(History.stack(list(hists)).to(dev))  # h (B, 1, d): [BOS]
    lp = torch.log_softmax(model.level_logits(0, h[:, 0]), -1).double().cpu().numpy()  # (B, K)
    for b, c in enumerate(codes):
        out[b] += weight[0] * lp[b, c[:, 0]]
    for m in range(1, L):  # the prefixes of length m, as C queries per history (padded to the longest)
        U = [len(p.code[m - 1]) for p in pre]
        C = max(U)
        parent = np.zeros((B, C), dtype=np.int64)
        last = np.zeros((B, C), dtype=np.int64)
        for b, p in enumerate(pre):
            parent[b, :U[b]], last[b, :U[b]] = p.parent[m - 1], p.code[m - 1]
        h_prev = torch.gather(h, 1, torch.from_numpy(parent).to(dev)[..., None].expand(-1, -1, h.shape[-1]))
        h = model.mtp_step(m + 1, h_prev, torch.from_numpy(last).to(dev), kv, valid)  # (B, C, d)
        lp = torch.log_softmax(model.level_logits(m, h), -1).double().cpu().numpy()  # (B, C, K)
        for b, (p, c) in enumerate(zip(pre, codes)):
            out[b] += weight[m] * lp[b, p.of_room[m - 1], c[:, m]]


def top_rooms(snapshot: LiveSnapshot, scores: np.ndarray, top_k: int) -> list[tuple[int, float]]:
    """The `top_k` rooms of a snapshot by score (ties: room id)."""
    order = np.lexsort((snapshot.rooms, -scores))[:top_k]
    return [(int(snapshot.rooms[i]), float(scores[i])) for i in order]
