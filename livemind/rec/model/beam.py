"""Beam search constrained to the semantic IDs of rooms that are live now (OneLive §3).

At each level a beam may only continue with codes that some live room's SID has after the
beam's prefix (`LiveSnapshot.allowed_next`), so every finished beam is a live room's SID; SIDs
then map back to rooms (all rooms of a SID, so collisions stay reachable).

`constrained_beam_search(..., dense=False)` is the fast path: it scores only the allowed codes of
each beam. `dense=True` is the plain reference twin: it masks a full (beams x K) score matrix.
Both break ties the same way (score, then beam, then code), so they agree exactly; a parity test
checks this on random inputs.

With a live-room prior (`GeneratorConfig.room_signals`), each live room also has a prior score
from its identity signals, and a room's score is w x log P(SID) + its prior (w: the generator's
`lp_weight`). The search accumulates w x log P in float64 and ranks beams by it + the best prior
among the live rooms under the prefix (`prefix_bonus`; only for choosing survivors, never
accumulated), so a beam leading to the viewer's favourite streamer is not pruned on content alone,
and the rooms of the finished SIDs are ranked by w x log P(SID) + their own prior. Nothing is
ever divided by w: for any w in [e^-88, e^88] every score is finite (a property test checks it
against a float64 reference).

With at most `EXACT_UP_TO` rooms live, `recommend` scores every live room instead
(`livemind.rec.model.exact`): the same score without pruning, in one batched model call per level.

Scorers decouple the search from the model: `start()` gives level-1 log-probabilities (1, K);
`extend(parents, codes)` continues beams (the i-th new beam is old beam `parents[i]` followed by
`codes[i]`) and gives the next level's log-probabilities (N, K).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import NamedTuple, Protocol

import numpy as np
import torch

from livemind.rec.data.watch import History
from livemind.rec.live.index import SID, LiveSnapshot
from livemind.rec.model.exact import live_room_scores, top_rooms
from livemind.rec.model.generator import Encoding, OneLiveGenerator

# With at most this many rooms live, `recommend` scores every one of them (`livemind.rec.model.exact`)
# instead of searching: no search error, and no dearer than a beam of 32 at that size, since from the
# second SID level on a room's prefix is mostly its own (docs/history.md, the service section)
EXACT_UP_TO = 64


class Scorer(Protocol):
    def start(self) -> np.ndarray:  # (1, K) log-probabilities of level 1
        ...

    def extend(self, parents: np.ndarray, codes: np.ndarray) -> np.ndarray:  # (N, K) of the next level
        ...


def prefix_bonus(snapshot: LiveSnapshot, prior: np.ndarray) -> dict[SID, float]:
    """Every prefix (length 1..L) of a live SID -> the highest prior (n,) among the live rooms under it."""
    if len(prior) != len(snapshot.rooms):
        raise ValueError(f"{len(prior)} prior scores for {len(snapshot.rooms)} live rooms")
    out: dict[SID, float] = {}
    for sid, p in zip(snapshot.codes.tolist(), np.asarray(prior, dtype=np.float64).tolist()):
        for level in range(1, len(sid) + 1):
            key = tuple(sid[:level])
            out[key] = max(out.get(key, -np.inf), p)
    return out


def constrained_beam_search(scorer: Scorer, snapshot: LiveSnapshot, beam: int, dense: bool = False,
                            bonus: dict[SID, float] | None = None, weight: float | Sequence[float] = 1.0
                            ) -> tuple[np.ndarray, np.ndarray]:
    """(SIDs (M, L), scores (M,)) of up to `beam` live SIDs, best first; a score is `weight` x log P(SID),
    or with a weight per level, Σ_l weight_l x log P(level l | the levels before).

    `bonus` (from `prefix_bonus`) is added to a beam's score when ranking beams, and the order
    returned is by score + bonus; the scores returned do not include it.
    """
    steps = beam_steps(snapshot, beam, dense, bonus, weight)
    ask = next(steps)
    try:
        while True:
            ask = steps.send(scorer.start() if ask is None else scorer.extend(*ask))
    except StopIteration as done:
        return done.value


def beam_steps(snapshot: LiveSnapshot, beam: int, dense: bool = False, bonus: dict[SID, float] | None = None,
               weight: float | Sequence[float] = 1.0) -> Generator[tuple[np.ndarray, np.ndarray] | None, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The search of `constrained_beam_search` as a generator, so that a caller can score the beams of
    many requests in one batch: it yields None for the first level's log-probabilities (1, K), then
    (parents, codes) of the kept beams for the next level's (N, K), and returns (SIDs, scores)."""
    if beam < 1:
        raise ValueError(f"beam must be at least 1, got {beam}")
    L = snapshot.levels
    weights = [float(w) for w in (weight if isinstance(weight, Sequence) else [weight] * L)]
    if len(weights) != L or not all(math.isfinite(w) and w > 0 for w in weights):
        raise ValueError(f"the weight of log P(SID) must be a positive finite number (or one per level of {L}), "
                         f"got {weight}")
    if not len(snapshot.rooms):
        return np.zeros((0, L), dtype=np.int64), np.zeros(0)
    prefixes = np.zeros((1, 0), dtype=np.int64)
    scores = np.zeros(1)
    lp = weights[0] * np.asarray((yield None), dtype=np.float64)
    for level in range(L):
        K = lp.shape[1]
        if dense:
            allowed = np.zeros((len(prefixes), K), dtype=bool)
            for i, p in enumerate(prefixes):
                allowed[i, snapshot.allowed_next(tuple(p.tolist()))] = True
            total = np.where(allowed, scores[:, None] + lp, -np.inf)  # (N, K)
            key = total.copy()
            if bonus is not None:
                for i, k in zip(*np.nonzero(allowed)):
                    key[i, k] += bonus[(*prefixes[i].tolist(), int(k))]
            key, total = key.ravel(), total.ravel()
            order = np.argsort(-key, kind="stable")[:beam]
            order = order[np.isfinite(key[order])]
            parents, codes, new_scores = order // K, order % K, total[order]
        else:
            cand_parent, cand_code = [], []
            for i, p in enumerate(prefixes):
                nxt = snapshot.allowed_next(tuple(p.tolist()))
                cand_parent.append(np.full(len(nxt), i))
                cand_code.append(nxt)
            cp, cc = np.concatenate(cand_parent), np.concatenate(cand_code)
            cs = scores[cp] + lp[cp, cc]
            rank = cs if bonus is None else cs + np.array(
                [bonus[(*prefixes[i].tolist(), int(k))] for i, k in zip(cp, cc)], dtype=np.float64)
            key = cp * K + cc  # flat position, the dense twin's tie-break
            order = np.lexsort((key, -rank))[:beam]
            parents, codes, new_scores = cp[order], cc[order], cs[order]
        prefixes = np.concatenate([prefixes[parents], codes[:, None]], axis=1)
        scores = new_scores
        if level + 1 < L:
            lp = weights[level + 1] * np.asarray((yield parents, codes), dtype=np.float64)
    return prefixes, scores


def rooms_from_sids(snapshot: LiveSnapshot, sids: np.ndarray, scores: np.ndarray, top_k: int,
                    prior: np.ndarray | None = None) -> list[tuple[int, float]]:
    """Map SIDs (best first) to their live rooms; rooms sharing a SID share its score.

    With a prior (n,) over `snapshot.rooms`, a room's score is its SID's score + its prior, and
    the rooms of all the SIDs are ranked by it (ties: room id).
    """
    if prior is not None:
        of_room = dict(zip(snapshot.rooms.tolist(), np.asarray(prior, dtype=np.float64).tolist()))
        ranked = [(room, float(s) + of_room[room]) for sid, s in zip(sids, scores)
                  for room in snapshot.rooms_for(tuple(sid.tolist()))]
        return sorted(ranked, key=lambda rs: (-rs[1], rs[0]))[:top_k]
    out: list[tuple[int, float]] = []
    for sid, s in zip(sids, scores):
        for room in snapshot.rooms_for(tuple(sid.tolist())):
            out.append((room, float(s)))
            if len(out) == top_k:
                return out
    return out


def _numpy(t: torch.Tensor) -> np.ndarray:
    """Scores to the CPU for the search (the model may sit on a GPU)."""
    return t.float().cpu().numpy()


class Encoded(NamedTuple):
    """One request's encoding by the main stack: tokens x (1, T+1, d), valid (1, T+1), [BOS]'s
    hidden state h (1, d) and the last layer's keys and values (each (1, H, T+1, hd))."""

    x: torch.Tensor
    valid: torch.Tensor
    h: torch.Tensor
    kv: tuple[torch.Tensor, torch.Tensor]


@torch.inference_mode()
def encode_requests(model: OneLiveGenerator, hists: list[History]) -> list[Encoded]:
    """Encode many requests' histories in one forward pass of the main stack (left-padded to the
    longest; padding is masked, so each request's encoding is its own up to float rounding)."""
    batch = History.stack(hists)
    x, valid = model.embed(batch)
    h, kv = model.main(x, valid, last=1)
    out = []
    for b, hist in enumerate(hists):
        T = hist.codes.shape[1] + 1  # its own tokens and [BOS], the last T positions
        out.append(Encoded(x[b:b + 1, -T:], valid[b:b + 1, -T:], h[b:b + 1, -1],
                           (kv[0][b:b + 1, :, -T:], kv[1][b:b + 1, :, -T:])))
    return out


class GeneratorScorer:
    """Scores beams for one request with the generator, in its configured decode mode.

    MTP: the main stack runs once; each level is one light module over the shared KV cache.
    AR: each level re-runs the full stack with the chosen codes appended as tokens.
    """

    def __init__(self, model: OneLiveGenerator, hist: History, encoded: Encoded | None = None) -> None:
        if hist.codes.shape[0] != 1:
            raise ValueError(f"a scorer serves one request, got a batch of {hist.codes.shape[0]}")
        self.model, self.hist, self.encoded = model, hist, encoded
        self.level = 1

    @torch.inference_mode()
    def start(self) -> np.ndarray:
        x, valid, h, kv = self.encoded if self.encoded is not None else encode_requests(self.model, [self.hist])[0]
        self.x, self.valid = x, valid
        self.h, self.kv = h, kv  # (1, d), shared KV (1, H, T+1, hd)
        self.codes = torch.zeros(1, 0, dtype=torch.long, device=self.model.device)
        self.level = 1
        return _numpy(torch.log_softmax(self.model.level_logits(0, self.h), -1))

    @torch.inference_mode()
    def extend(self, parents: np.ndarray, codes: np.ndarray) -> np.ndarray:
        self.level += 1
        dev = self.model.device
        p, c = torch.from_numpy(parents).to(dev), torch.from_numpy(codes).to(dev)
        self.codes = torch.cat([self.codes[p], c[:, None]], dim=1)  # (N, level-1)
        n, lv = len(parents), self.level - 1
        if self.model.cfg.decode == "mtp":
            kv = tuple(t.expand(n, -1, -1, -1) for t in self.kv)
            self.h = self.model.mtp_step(self.level, self.h[p], c, kv, self.valid.expand(n, -1))
            return _numpy(torch.log_softmax(self.model.level_logits(lv, self.h), -1))
        steps = [self.model.prev_emb[lv](self.codes[:, lv])[:, None, :] for lv in range(self.level - 1)]
        x = torch.cat([self.x.expand(n, -1, -1), *steps], dim=1)
        valid = torch.cat([self.valid.expand(n, -1), torch.ones(n, len(steps), dtype=torch.bool, device=dev)], dim=1)
        h, _ = self.model.main(x, valid, last=1)
        return _numpy(torch.log_softmax(self.model.level_logits(lv, h[:, -1]), -1))


def recommend(model: OneLiveGenerator, hist: History, snapshot: LiveSnapshot, top_k: int = 10,
              beam: int = 32, signals: np.ndarray | None = None,
              encoded: Encoded | None = None, exact_up_to: int = EXACT_UP_TO) -> list[tuple[int, float]]:
    """Top-k live rooms for one viewer: constrained beam search, then SIDs -> rooms; with at most
    `exact_up_to` rooms live, every live room scored instead (the search without pruning).

    `signals` (n, S): identity signals of `snapshot.rooms` (`RoomSignals.signals`), required when
    the generator has a live-room prior. Nothing live: an empty list. A viewer with no history
    (T = 0) is scored from [BOS] alone. `encoded`: the request's `encode_requests` output when the
    caller batched the main stack over several requests (the live service does).
    """
    if not len(snapshot.rooms):
        return []
    if model.training:  # eval() walks every module: per request that is most of the Python overhead
        model.eval()
    prior = bonus = None
    if model.cfg.room_signals:
        if signals is None:
            raise ValueError("this generator ranks live rooms with a prior over their identity signals: pass signals")
        with torch.inference_mode():
            cand = torch.from_numpy(snapshot.codes)[None].to(model.device)
            sig = torch.as_tensor(np.asarray(signals, dtype=np.float32), device=model.device)[None]
            prior = _numpy(model.live_prior(hist, cand, sig)[0])
    if len(snapshot.rooms) <= exact_up_to:
        enc = Encoding(encoded.h[:, None], encoded.kv, encoded.valid) if encoded is not None else None
        return top_rooms(snapshot, live_room_scores(model, [hist], [snapshot], [prior], enc)[0], top_k)
    if prior is not None:
        bonus = prefix_bonus(snapshot, prior)
    sids, scores = constrained_beam_search(GeneratorScorer(model, hist, encoded), snapshot, max(beam, top_k),
                                           bonus=bonus, weight=model.lp_weight().tolist())
    return rooms_from_sids(snapshot, sids, scores, top_k, prior)


@torch.inference_mode()
def recommend_batch(model: OneLiveGenerator, hists: Sequence[History], snapshots: Sequence[LiveSnapshot],
                    top_k: int = 10, beam: int = 32, signals: Sequence[np.ndarray | None] | None = None,
                    exact_up_to: int = EXACT_UP_TO) -> list[list[tuple[int, float]]]:
    """`recommend` for many requests at once, the same search with every model call batched: one
    main-stack pass over all histories, one prior pass, and per SID level one MTP step over the beams
    of every request (the requests scored exactly: one over all their rooms' prefixes). The answers
    are `recommend`'s up to float rounding (tests and the serving benchmark check it). AR
    generators take `recommend` request by request."""
    B = len(hists)
    signals = list(signals) if signals is not None else [None] * B
    if model.cfg.decode != "mtp" or B == 0:
        return [recommend(model, h, s, top_k, beam, g, exact_up_to=exact_up_to)
                for h, s, g in zip(hists, snapshots, signals)]
    if model.training:
        model.eval()
    dev = model.device
    batch = History.stack(list(hists)).to(dev)
    x, valid = model.embed(batch)
    h0, kv = model.main(x, valid, last=1)  # (B, 1, d), KV (B, H, T+1, hd)
    weight, priors = model.lp_weight().tolist(), [None] * B
    if model.cfg.room_signals:
        if any(g is None for g, snap in zip(signals, snapshots) if len(snap.rooms)):
            raise ValueError("this generator ranks live rooms with a prior over their identity signals: pass signals")
        C = max(1, max(len(snap.rooms) for snap in snapshots))
        cand = np.zeros((B, C, model.cfg.levels), dtype=np.int64)  # padding: code 0, signals 0, sliced off below
        sig = np.zeros((B, C, model.cfg.room_signals), dtype=np.float32)
        for b, (snap, g) in enumerate(zip(snapshots, signals)):
            cand[b, :len(snap.rooms)] = snap.codes
            if g is not None:
                sig[b, :len(snap.rooms)] = g
        prior = _numpy(model.live_prior(batch, torch.from_numpy(cand).to(dev), torch.from_numpy(sig).to(dev)))
        priors = [prior[b, :len(snap.rooms)] for b, snap in enumerate(snapshots)]
    exact = [b for b, snap in enumerate(snapshots) if 0 < len(snap.rooms) <= exact_up_to]
    if exact:
        sel = torch.tensor(exact, device=dev)
        enc = Encoding(h0[sel], (kv[0][sel], kv[1][sel]), valid[sel])
        scores = live_room_scores(model, [hists[b] for b in exact], [snapshots[b] for b in exact],
                                  [priors[b] for b in exact], enc)
        scored = {b: top_rooms(snapshots[b], s, top_k) for b, s in zip(exact, scores)}
    else:
        scored = {}
    searches, asks, hidden = {}, {}, {}
    for b, snap in enumerate(snapshots):
        if len(snap.rooms) and b not in scored:
            bonus = prefix_bonus(snap, priors[b]) if priors[b] is not None else None
            searches[b] = beam_steps(snap, max(beam, top_k), bonus=bonus, weight=weight)
            asks[b] = next(searches[b])
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    live = list(searches)
    if live:
        hidden = {b: h0[b:b + 1, -1] for b in live}  # (1, d): [BOS]
        lp0 = _numpy(torch.log_softmax(model.level_logits(0, h0[live, -1]), -1))
        lps = {b: lp0[i:i + 1] for i, b in enumerate(live)}
    level = 1
    while live:
        asking = []
        for b in live:
            try:
                asks[b] = searches[b].send(lps[b])
                asking.append(b)
            except StopIteration as done:
                results[b] = done.value
        live = asking
        if not live:
            break
        level += 1
        rows = [np.full(len(asks[b][0]), b) for b in live]
        owner = torch.from_numpy(np.concatenate(rows)).to(dev)  # (N,) request of each beam
        h_prev = torch.cat([hidden[b][torch.from_numpy(asks[b][0]).to(dev)] for b in live])  # (N, d)
        codes = torch.from_numpy(np.concatenate([asks[b][1] for b in live])).to(dev)  # (N,)
        h = model.mtp_step(level, h_prev, codes, (kv[0][owner], kv[1][owner]), valid[owner])  # (N, d)
        lp = _numpy(torch.log_softmax(model.level_logits(level - 1, h), -1))
        start = 0
        for b, r in zip(live, rows):
            hidden[b], lps[b] = h[start:start + len(r)], lp[start:start + len(r)]
            start += len(r)
    out = []
    for b, snap in enumerate(snapshots):
        if b in scored:
            out.append(scored[b])
            continue
        if b not in results:
            out.append([])
            continue
        sids, scores = results[b]
        out.append(rooms_from_sids(snap, sids, scores, top_k, priors[b]))
    return out
