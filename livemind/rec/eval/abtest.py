"""A simulated online A/B test: policies side by side over the same viewers' visits.

Protocol:
- Visits: a seeded sample of the (viewer, time) visits logged in a time window (the held-out
  window after the split). Every policy serves the same visits, a slate of `slate` live rooms each.
- What each impression earns is the simulator's ground truth, `LiveWorld.expected`: the
  expected click, watch minutes, like, comment, follow, gift, purchase and GMV of showing that
  room to that viewer at that moment, with the viewer's state (past watches, follows) as logged
  before the visit. Expected values rather than drawn events remove the coin-flip noise; what is
  left is which viewers visit, which a paired bootstrap over visits turns into 95% intervals.
- Feedback loops inside the window (a follow today raising tomorrow's clicks) are not replayed:
  every policy sees the logged past, so the comparison is of one decision each, not of a policy's
  long-run effect on the audience.

Policies: popularity among live rooms, a two-stage cascade (popularity retrieval of `retrieve`
rooms, ranked by the reward model's weighted objective), and OneLive generators (constrained beam
search over the live index).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from rich.console import Group
from rich.table import Table

from livemind.align.objectives import check_weights
from livemind.errors import DataError
from livemind.rec.alignment.align import DEFAULT_OBJECTIVES, RewardScorer
from livemind.rec.alignment.reward_model import RewardModel
from livemind.rec.baselines.popularity import PopularityRanker
from livemind.rec.data.feedback import OBJECTIVES, ViewerState
from livemind.rec.data.prepare import RecData
from livemind.rec.data.room_signals import RoomSignals
from livemind.rec.data.watch import WatchLog
from livemind.rec.eval.offline import recommend_at
from livemind.rec.live.rooms import LiveRooms
from livemind.rec.model.generator import OneLiveGenerator
from livemind.rec.model.prior import prior_signals
from livemind.report import figure
from livemind.world.schema import EVENT_KINDS
from livemind.world.simulator import LiveWorld, WorldConfig, weighted_sum
from livemind.world.tables import WorldData

METRICS: tuple[str, ...] = ("click", "watch_minutes", "like", "comment", "follow", "gift", "purchase", "gmv", "weighted")


@dataclass(frozen=True)
class ABConfig:
    visits: int = 3000  # visits sampled from the window
    slate: int = 1  # rooms shown per visit: one full-screen room per request, as a live feed serves them
    retrieve: int = 20  # the cascade's retrieval size
    beam: int = 32
    bootstrap: int = 1000
    seed: int = 0
    objectives: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_OBJECTIVES))  # the weighted metric

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", check_weights(dict(self.objectives), OBJECTIVES))
        for name in ("visits", "slate", "retrieve", "beam", "bootstrap"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


class Policy(Protocol):
    name: str

    def slate(self, viewer: int, t: float, k: int) -> list[int]:  # live rooms, best first
        ...


@dataclass
class PopularityPolicy:
    ranker: PopularityRanker
    log: WatchLog
    name: str = "popularity"

    def slate(self, viewer: int, t: float, k: int) -> list[int]:
        return self.ranker.rank_at(self.log, t)[:k]


@dataclass
class CascadePolicy:
    """Retrieval (live rooms by recent popularity, top `retrieve`) -> ranking by the reward model."""

    ranker: PopularityRanker
    log: WatchLog
    scorer: RewardScorer
    weights: torch.Tensor  # (M,) over scorer.names
    retrieve: int
    name: str = "cascade"

    def slate(self, viewer: int, t: float, k: int) -> list[int]:
        rooms, seg = self.ranker.live.live_segments(t)
        top = np.array(self.ranker.rank_at(self.log, t)[:self.retrieve], dtype=np.int64)
        keep = np.isin(rooms, top)
        rooms, seg = rooms[keep], seg[keep]
        if not len(rooms):
            return []
        n = len(rooms)
        obj = self.scorer(np.full(n, viewer), rooms, torch.from_numpy(self.ranker.live.codes[seg]), np.full(n, t))
        score = (obj * self.weights).sum(-1).numpy()
        return rooms[np.lexsort((rooms, -score))][:k].tolist()


@dataclass
class GeneratorPolicy:
    """A OneLive generator's constrained beam search; `signals` feeds its live-room prior when it has one."""

    model: OneLiveGenerator
    live: LiveRooms
    log: WatchLog
    beam: int
    name: str
    signals: RoomSignals | None = None

    def slate(self, viewer: int, t: float, k: int) -> list[int]:
        return [r for r, _ in recommend_at(self.model, self.log, self.live, self.signals, viewer, t, k, self.beam)]


def standard_policies(data: RecData, state: ViewerState, reward: RewardModel, cfg: ABConfig,
                      generators: dict[str, OneLiveGenerator]) -> list[Policy]:
    """Popularity, the cascade (popularity retrieval -> reward-model ranking) and each generator."""
    pop = PopularityRanker(data.live)
    names = tuple(cfg.objectives)
    scorer = RewardScorer(reward, state, data.log, data.live, names)
    policies: list[Policy] = [
        PopularityPolicy(pop, data.log),
        CascadePolicy(pop, data.log, scorer, torch.tensor([cfg.objectives[n] for n in names], device="cpu"), cfg.retrieve),
    ]
    policies += [GeneratorPolicy(m, data.live, data.log, cfg.beam, name, prior_signals(m.cfg, data.log, state, data.live))
                 for name, m in generators.items()]
    return policies


def sample_visits(world: WorldData, start: float, end: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of n logged visits (viewer, time) in [start, end), sorted by time."""
    ev = world.event_batch()
    sel = (ev.kind == EVENT_KINDS.index("impression")) & (ev.time >= start) & (ev.time < end)
    pairs = np.unique(np.stack([ev.time[sel], ev.viewer[sel].astype(np.float64)], axis=1), axis=0)  # (V, 2) by time
    if not len(pairs):
        raise DataError(f"no logged visit between {start:.0f} and {end:.0f}")
    pick = np.sort(np.random.default_rng(seed).choice(len(pairs), min(n, len(pairs)), replace=False))
    return pairs[pick, 1].astype(np.int64), pairs[pick, 0]


def ground_truth(world: WorldData) -> LiveWorld:
    """The simulator behind a simulated world, rebuilt from its config (structure is seeded)."""
    if world.meta.get("source") != "simulator" or "config" not in world.meta:
        raise DataError("an A/B test needs the simulator's ground truth: this world was not simulated by livemind "
                        f"(source {world.meta.get('source')!r})")
    sim = LiveWorld(WorldConfig(**world.meta["config"]))
    start = world.rooms.sort_by("id").column("start_time").to_numpy()
    if sim.n_rooms != len(start) or not np.array_equal(sim.room_start, start):
        raise DataError("the world's rooms do not match the simulator rebuilt from its config")
    return sim


@dataclass
class ABResult:
    policies: list[str]
    impressions: dict[str, int]
    per_visit: dict[str, np.ndarray]  # policy -> (V, len(METRICS)) sums over the visit's slate
    n_imp: dict[str, np.ndarray]  # policy -> (V,) impressions shown
    boot: np.ndarray  # (bootstrap, V) resampled visit indices, shared by every policy (paired)

    def per_1000(self, policy: str) -> dict[str, float]:
        tot = self.per_visit[policy].sum(0) * 1000.0 / max(self.n_imp[policy].sum(), 1)
        return dict(zip(METRICS, tot.tolist()))

    def _boot(self, policy: str) -> np.ndarray:
        """(bootstrap, metrics) per-1000 values on each resample."""
        s = self.per_visit[policy][self.boot].sum(1)  # (Bt, M)
        return s * 1000.0 / np.maximum(self.n_imp[policy][self.boot].sum(1), 1)[:, None]

    def interval(self, policy: str, metric: str) -> tuple[float, float]:
        b = self._boot(policy)[:, METRICS.index(metric)]
        return float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5))

    def lift(self, policy: str, baseline: str, metric: str) -> tuple[float, float, float]:
        """Relative lift of `policy` over `baseline` per 1,000 impressions, with a paired 95% interval."""
        j = METRICS.index(metric)
        point = self.per_1000(policy)[metric] / self.per_1000(baseline)[metric] - 1
        b = self._boot(policy)[:, j] / self._boot(baseline)[:, j] - 1
        return float(point), float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5))


def run_abtest(sim: LiveWorld, state: ViewerState, policies: Sequence[Policy], viewers: np.ndarray, times: np.ndarray,
               cfg: ABConfig, progress: Callable[[str, int, int], None] | None = None) -> ABResult:
    """Serve every visit with every policy; sum the ground-truth expected feedback per visit."""
    if len({p.name for p in policies}) != len(policies):
        raise DataError(f"policy names must be distinct, got {[p.name for p in policies]}")
    w = cfg.objectives
    per_visit, n_imp = {}, {}
    with torch.inference_mode():
        for p in policies:
            rows_v, rows_r = [], []
            for i, (v, t) in enumerate(zip(viewers, times)):
                rooms = p.slate(int(v), float(t), cfg.slate)
                rows_v += [i] * len(rooms)
                rows_r += rooms
                if progress is not None and (i + 1) % 100 == 0:
                    progress(p.name, i + 1, len(viewers))
            vi, r = np.array(rows_v, dtype=np.int64), np.array(rows_r, dtype=np.int64)
            v, t = viewers[vi], times[vi]
            s = sim.room_streamer[r]
            exp = sim.expected(v, r, t, watches=state.watches(v, s, t), follows=state.follows(v, s, t))
            exp["weighted"] = weighted_sum(exp, w)
            cols = np.stack([exp[m] for m in METRICS], axis=1)  # (N, M)
            sums = np.zeros((len(viewers), len(METRICS)))
            np.add.at(sums, vi, cols)
            per_visit[p.name], n_imp[p.name] = sums, np.bincount(vi, minlength=len(viewers))
    boot = np.random.default_rng([cfg.seed, 1]).integers(0, len(viewers), size=(cfg.bootstrap, len(viewers)))
    return ABResult([p.name for p in policies], {k: int(v.sum()) for k, v in n_imp.items()}, per_visit, n_imp, boot)


def ab_table_rows(res: ABResult, baseline: str) -> tuple[list[list[str]], list[list[str]]]:
    """Two tables, one row per metric and one column per policy: per 1,000 impressions with 95%
    intervals, and each other policy's lift over `baseline` with its paired 95% interval."""
    values, lifts = [], []
    others = [p for p in res.policies if p != baseline]
    for m in METRICS:
        scale, unit = (0.1, "%") if m == "click" else (1.0, "")  # CTR in percent
        row = ["CTR" if m == "click" else m.replace("_", " ")]
        for p in res.policies:
            lo, hi = res.interval(p, m)
            row.append(f"{res.per_1000(p)[m] * scale:,.1f}{unit} [{lo * scale:,.1f}, {hi * scale:,.1f}]")
        values.append(row)
        row = [row[0]]
        for p in others:
            x, lo, hi = res.lift(p, baseline, m)
            row.append(f"{x:+.1%} [{lo:+.1%}, {hi:+.1%}]" if math.isfinite(x) else "n/a")
        lifts.append(row)
    return values, lifts


def abtest_table(res: ABResult, baseline: str, title: str) -> Group:
    """Per 1,000 impressions with 95% intervals, then each policy's lift over `baseline`
    (`livemind.rec.eval.abtest.ABResult`); metrics down, policies across."""
    values, lifts = ab_table_rows(res, baseline)
    t1 = Table(title=title)
    t1.add_column("per 1,000 impressions")
    for p in res.policies:
        t1.add_column(f"{p}\n({res.impressions[p]:,} imp.)", justify="right")
    for row in values:
        t1.add_row(*row)
    t2 = Table(title=f"lift over the {baseline} [paired 95% interval]")
    t2.add_column("metric")
    for p in res.policies:
        if p != baseline:
            t2.add_column(p, justify="right")
    for row in lifts:
        t2.add_row(*row)
    return Group(t1, t2)


def plot_abtest(res: ABResult, baseline: str, path) -> None:
    """Lift of each policy over the baseline per metric, with 95% intervals."""
    others = [p for p in res.policies if p != baseline]
    with figure(path, 1, (10, 3.6)) as (_, ax):
        _plot_lifts(ax, res, baseline, others)


def _plot_lifts(ax, res: ABResult, baseline: str, others: list[str]) -> None:
    width = 0.8 / max(len(others), 1)
    x = np.arange(len(METRICS))
    for i, p in enumerate(others):
        lifts = np.array([res.lift(p, baseline, m) for m in METRICS]) * 100  # (M, 3)
        ax.bar(x + i * width, lifts[:, 0], width, label=p,
               yerr=[lifts[:, 0] - lifts[:, 1], lifts[:, 2] - lifts[:, 0]], capsize=2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x + width * (len(others) - 1) / 2, [m.replace("_", " ") for m in METRICS], fontsize=8)
    ax.set_ylabel(f"% lift vs {baseline}")
    ax.set_title("simulated A/B: lift per 1,000 impressions (95% paired bootstrap)")
    ax.legend(fontsize=8)
