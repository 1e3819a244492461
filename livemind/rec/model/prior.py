"""Refitting the live-room prior on held-out requests (see the generator's docstring for the prior)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from livemind.rec.data.feedback import ViewerState
from livemind.rec.data.room_signals import RoomSignals
from livemind.rec.data.watch import WatchLog
from livemind.rec.live.rooms import LiveRooms
from livemind.rec.model.generator import LOG_LP_WEIGHT_RANGE, GeneratorConfig, OneLiveGenerator


def prior_signals(cfg: GeneratorConfig, log: WatchLog, state: ViewerState, live: LiveRooms,
                  room_loss: float = 0.0) -> RoomSignals | None:
    """The identity signals a generator's live-room prior reads, configured as it was trained
    (`cfg.signals`); None for a generator without a prior, unless it trains by a softmax over the
    live rooms (`room_loss` > 0), which reads the live rooms from them."""
    return RoomSignals(log, state, live, cfg.signals) if cfg.room_signals or room_loss else None


# (request, live room) entries the refit reads at most: it fits a few hundred parameters, and on a world with
# hundreds of rooms live its held-out rows hold millions of entries (the large world's, an estimated 3.5M,
# took, with two evaluations, ~2,000 of the prior model's 2,408 s); the default world's refit reads 1.29M and stays whole
MAX_REFIT_ENTRIES = 2_000_000


def refit_rows(signals: RoomSignals, rows: np.ndarray, max_entries: int = MAX_REFIT_ENTRIES) -> np.ndarray:
    """`rows`, or a seeded sample of them in time order whose live rooms add up to at most `max_entries`."""
    live = np.array([len(signals.live.rooms(float(signals.log.time[r]))) for r in rows])
    if live.sum() <= max_entries:
        return np.asarray(rows)
    order = np.random.default_rng(0).permutation(len(rows))
    keep = order[: max(1, int(np.searchsorted(np.cumsum(live[order]), max_entries, "right")))]
    return np.asarray(rows)[np.sort(keep)]


def fit_room_prior(model: OneLiveGenerator, signals: RoomSignals, rows: np.ndarray, iterations: int = 100,
                   chunk: int = 256, causal: bool = False, fit_weight: bool = True,
                   max_entries: int = MAX_REFIT_ENTRIES) -> tuple[float, float]:
    """Refit the live-room prior and the weight of each level of log P(SID) on held-out request rows,
    the rest of the generator frozen; returns the room cross-entropy on those rows before and after.

    On its own training targets the generator's log P(SID) is sharper than on new requests, so a
    prior trained jointly with it undervalues the identity signals; fitting it on watches the
    generator never trained on (a validation slice before the split) calibrates the two. Rows whose
    live rooms add up to more than `max_entries` are sampled down to that (`refit_rows`).
    """
    if not model.cfg.room_signals:
        raise ValueError("the generator has no live-room prior (room_signals = 0) to fit")
    rows = refit_rows(signals, rows, max_entries)
    H = model.cfg.max_history
    lps, priors_in, at, targets = [], [], [], []  # the fit reads only live (request, room) entries
    n = C = 0
    model.eval()
    dev = model.device
    with torch.no_grad():
        for i in range(0, len(rows), chunk):
            r = np.asarray(rows[i:i + chunk])
            rb = signals.batch(r, causal=causal)
            hist, _ = signals.log.batch(r, H, causal=causal)
            ok = rb.target >= 0  # the watched room is live with a segment (always, for a world's log)
            m = rb.mask[ok]
            lps.append(model.sid_level_log_probs(hist, rb.codes)[ok.to(dev)][m.to(dev)])  # (entries, L)
            aff = model.affinity(hist, rb.codes) if model.cfg.code_dim else torch.zeros(rb.mask.shape, device=dev)
            priors_in.append(torch.cat([rb.signals.to(dev), aff[..., None]], -1)[ok.to(dev)][m.to(dev)])
            b, c = torch.nonzero(m, as_tuple=True)
            at.append((b.to(dev) + n, c.to(dev)))
            targets.append(rb.target[ok].to(dev))
            n, C = n + len(m), max(C, m.shape[1])
    lp, x, target = torch.cat(lps), torch.cat(priors_in), torch.cat(targets)
    at = (torch.cat([a[0] for a in at]), torch.cat([a[1] for a in at]))
    S = model.cfg.room_signals

    def loss() -> torch.Tensor:
        score = (lp * model.lp_weight()).sum(-1) + model.prior(x[:, :S], x[:, S] if model.cfg.code_dim else None)
        return F.cross_entropy(torch.full((n, C), float("-inf"), device=dev).index_put(at, score), target)

    # fit_weight=False keeps the weight of log P(SID) as it is (at its floor: the prior alone)
    params = [*model.room_prior.parameters(), *([model.log_lp_scale] if fit_weight else [])]
    with torch.no_grad():
        before = loss().item()
    # a few hundred parameters on every held-out entry at once: full-batch L-BFGS reaches a lower
    # loss in 100 iterations than 300 Adam steps did, in less than half the time
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    opt.step(closure)
    with torch.no_grad():
        model.log_lp_scale.clamp_(*LOG_LP_WEIGHT_RANGE)  # the weight it served with, stored as such
        after = loss().item()
    if not all(torch.isfinite(p).all() for p in params) or not math.isfinite(after):
        raise FloatingPointError(f"the prior's refit left a non-finite parameter or loss ({after}); "
                                 "the checkpoint is not written")
    return before, after


# Under this weight of log P(SID) the generator's share of a room's score is too small to reorder
# rooms whose priors differ by a few hundredths (a typical log P(SID) spread is a few nats).
SMALL_LP_WEIGHT = 0.05


def generator_share(model: OneLiveGenerator) -> str:
    """One sentence on who ranks: the weight of log P(SID) beside the prior, and, when it is small,
    that the prior ranks (almost) alone, so a refit that switched the generator off is said in words."""
    if not model.cfg.room_signals:
        return "the generator ranks alone (no live-room prior)"
    ws = model.lp_weight().tolist()
    w, shown = max(ws), " + ".join(f"{x:.3g} x log P(level {i + 1})" for i, x in enumerate(ws))
    if w <= math.exp(LOG_LP_WEIGHT_RANGE[0]) * 1.0001:
        return (f"the prior ranks alone: the refit put the generator's weight at its floor ({w:.2g} x log P(SID)); "
                "its log P(SID) only breaks ties")
    if w < SMALL_LP_WEIGHT:
        return (f"the prior ranks almost alone: the generator's weights are all under {SMALL_LP_WEIGHT} (at most "
                f"{w:.3g} x the log-probability of a level)")
    return f"a room's score = {shown} + the live-room prior"
