import dataclasses

import numpy as np
import pytest
import torch

from livemind.errors import DataError
from livemind.rec.data.feedback import ViewerState
from livemind.rec.eval.abtest import METRICS, ABConfig, ground_truth, run_abtest, sample_visits
from livemind.world.tables import WorldData


@dataclasses.dataclass
class Fixed:
    """Shows the lowest-numbered live rooms (a deterministic policy with a known slate)."""

    sim: object
    name: str = "lowest ids"

    def slate(self, viewer: int, t: float, k: int) -> list[int]:
        return self.sim.live_rooms(t)[:k].tolist()


@dataclasses.dataclass
class Shuffled:
    sim: object
    seed: int = 0
    name: str = "random"

    def slate(self, viewer: int, t: float, k: int) -> list[int]:
        live = self.sim.live_rooms(t)
        return np.random.default_rng([self.seed, viewer, int(t)]).permutation(live)[:k].tolist()


@pytest.fixture(scope="module")
def ab(tiny_world, tiny_rec):
    _, world = tiny_world
    return ground_truth(world), ViewerState.from_world(world), tiny_rec.split, world


def test_per_1000_is_the_ground_truth_by_hand(ab):
    sim, state, split, world = ab
    cfg = ABConfig(visits=40, slate=2, bootstrap=50)
    v, t = sample_visits(world, split, split + 6 * 3600, cfg.visits, seed=1)
    res = run_abtest(sim, state, [Fixed(sim)], v, t, cfg)
    rows_v, rows_t, rooms = [], [], []
    for vi, ti in zip(v, t):
        for r in sim.live_rooms(ti)[:2]:
            rows_v.append(vi), rows_t.append(ti), rooms.append(r)
    rv, rt, rr = np.array(rows_v), np.array(rows_t), np.array(rooms)
    s = sim.room_streamer[rr]
    exp = sim.expected(rv, rr, rt, watches=state.watches(rv, s, rt), follows=state.follows(rv, s, rt))
    assert res.impressions["lowest ids"] == len(rr)
    assert res.per_1000("lowest ids")["gmv"] == pytest.approx(1000 * exp["gmv"].sum() / len(rr), rel=1e-12)
    weighted = sum(w * exp[k] for k, w in cfg.objectives.items())
    assert res.per_1000("lowest ids")["weighted"] == pytest.approx(1000 * weighted.sum() / len(rr), rel=1e-12)


def test_identical_seeds_identical_numbers(ab):
    sim, state, split, world = ab
    cfg = ABConfig(visits=60, slate=3, bootstrap=200, seed=4)

    def once(seed: int):
        v, t = sample_visits(world, split, split + 6 * 3600, cfg.visits, seed)
        res = run_abtest(sim, state, [Fixed(sim), Shuffled(sim)], v, t, dataclasses.replace(cfg, seed=seed))
        return [res.per_1000(p)[m] for p in res.policies for m in METRICS] + list(res.lift("random", "lowest ids", "weighted"))

    assert once(4) == once(4)
    assert once(4) != once(5)


def test_lift_of_a_policy_over_itself_is_zero(ab):
    sim, state, split, world = ab
    v, t = sample_visits(world, split, split + 6 * 3600, 30, 0)
    res = run_abtest(sim, state, [Fixed(sim), Fixed(sim, name="twin")], v, t, ABConfig(visits=30, bootstrap=20))
    assert res.lift("twin", "lowest ids", "click") == (0.0, 0.0, 0.0)
    lo, hi = res.interval("twin", "watch_minutes")
    assert lo <= res.per_1000("twin")["watch_minutes"] <= hi


def test_needs_a_simulated_world_and_distinct_names(ab):
    sim, state, split, world = ab
    with pytest.raises(DataError, match="needs the simulator's ground truth"):
        ground_truth(WorldData(meta={"source": "twitch"}))
    with pytest.raises(DataError, match="policy names must be distinct"):
        run_abtest(sim, state, [Fixed(sim), Fixed(sim)], np.array([0]), np.array([split]), ABConfig())
    with pytest.raises(DataError, match="no logged visit between"):
        sample_visits(world, 0.0, 10.0, 5, 0)


def test_a_generator_policy_with_a_live_room_prior_serves_what_recommend_ranks(ab, tiny_rec):
    from livemind.rec.data.room_signals import RoomSignals
    from livemind.rec.eval.abtest import GeneratorPolicy
    from livemind.rec.model.beam import recommend
    from livemind.rec.model.generator import GeneratorConfig, OneLiveGenerator

    sim, state, split, world = ab
    torch.manual_seed(0)
    model = OneLiveGenerator(GeneratorConfig(levels=2, codebook_size=8, d_model=16, n_heads=2, n_layers=1,
                                             max_history=5, level_weights=(1.0, 1.0), room_signals=5)).eval()
    with torch.no_grad():
        model.room_prior[-1].weight.fill_(2.0)  # a strong prior: the signals decide the slate
    signals = RoomSignals(tiny_rec.log, state, tiny_rec.live)
    policy = GeneratorPolicy(model, tiny_rec.live, tiny_rec.log, 4, "prior", signals)
    v, t = sample_visits(world, split, split + 6 * 3600, 20, 0)
    for vi, ti in zip(v.tolist(), t.tolist()):
        snap = tiny_rec.live.snapshot(ti)
        hist = tiny_rec.log.history_at(vi, ti, 5)
        want = [r for r, _ in recommend(model, hist, snap, 3, 4, signals.for_request(vi, ti, snap.rooms))]
        assert policy.slate(vi, ti, 3) == want
        assert set(want) <= set(sim.live_rooms(ti).tolist())
    with pytest.raises(ValueError, match="this generator has a live-room prior: pass signals"):
        GeneratorPolicy(model, tiny_rec.live, tiny_rec.log, 4, "prior").slate(int(v[0]), float(t[0]), 3)
