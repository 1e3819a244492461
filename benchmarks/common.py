"""What the benchmarks share: stage timing, the rec benchmark world and models, a world's live
stream as wire bodies, and this machine's facts (read bandwidth, CPU flags). A benchmark run as
`python benchmarks/NAME.py` imports it as `common` (its folder is on the path)."""

from __future__ import annotations

import dataclasses
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from livemind.config import load_config
from livemind.serve.rec.replay import wire, world_stream
from livemind.world.simulator import WorldConfig, simulate_world

ROOT = Path(__file__).resolve().parent.parent


def finite_json(row: dict) -> dict:
    """A benchmark's JSON line with null for what was not measured (NaN), as JSON has no NaN.

    >>> finite_json({"correct_base": float("nan"), "correct_rft": 0.776})
    {'correct_base': None, 'correct_rft': 0.776}
    """
    return {k: None if isinstance(v, float) and v != v else v for k, v in row.items()}


def read_bandwidth_gb_s() -> float:
    """This machine's read bandwidth: the best of 5 read-only passes (a sum on every core) over a
    512 MB array, in a subprocess (its OpenMP threads must not outlive it here). An earlier version
    timed a copy, which also writes every byte it reads: it gave ~19 GB/s, and CTranslate2 float32
    decoded 1.7x faster than the ceiling that implied."""
    code = ("import time, torch; torch.set_num_threads(len(__import__('os').sched_getaffinity(0))); "
            "a = torch.ones(64 * 2 ** 20, dtype=torch.float64); a.sum(); best = 1e9\n"
            "for _ in range(5):\n t = time.perf_counter(); a.sum(); best = min(best, time.perf_counter() - t)\n"
            "print(a.numel() * 8 / best / 1e9)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def stage(msg: str, t0: float) -> None:
    print(f"{time.perf_counter() - t0:8.1f} s  {msg}", flush=True)


def bench_models(bench: Path) -> tuple:
    """(world, the held-out split time, tokenizer folder, generator + prior folder) of rec_quality.py's run
    in `bench`: the world of configs/world/rec.yaml, held out from 2/3 of its days on. The tokenizer is
    the one rec_quality.py cached, laid out as configs/rec/tokenizer.yaml says (as rec_quality.py used
    it: the layout changes no weight but the version), saved once beside it for the service to load."""
    from livemind.rec.tokenizer.dynamic import DynamicTokenizer
    from livemind.rec.tokenizer.fit import TokenizerConfig, laid_out

    wcfg = load_config(ROOT / "configs/world/rec.yaml", WorldConfig)
    world = simulate_world(wcfg)
    split = wcfg.start_time + wcfg.days * 86400 * 2 / 3
    toks = sorted(bench.glob("tokenizer-*"))
    gen_dir = bench / "gen-prior"
    if not toks or not (gen_dir / "state.json").is_file():
        raise SystemExit(f"run `python benchmarks/rec_quality.py --quick` first: no tokenizer / gen-prior in {bench}")
    tcfg = load_config(ROOT / "configs/rec/tokenizer.yaml", TokenizerConfig)
    tok = laid_out(DynamicTokenizer.load(toks[-1], cache_dir=bench / "embeddings"), world,
                   dataclasses.replace(tcfg, train_until=split))
    served = bench / f"served-{tok.version}"
    if not (served / "tokenizer.json").is_file():
        tok.save(served, {"train": {"train_until": split}})
    return world, split, served, gen_dir


def stream_items(world, until: float) -> list[tuple[float, int, dict, tuple | None]]:
    """(time, order, wire body, (viewer, time) when a watch) of the world's live stream."""
    out = []
    for t, order, rec in world_stream(world, until):
        body = wire(rec)
        out.append((t, order, body, (body["viewer"], t) if body["kind"] == "watch" else None))
    return out


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor()
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags)


class RandomRanker:
    """The floor: the rooms live at the request time in a seeded random order."""

    name = "random (live)"

    def __init__(self, live, seed: int = 0) -> None:
        self.live, self.seed = live, seed

    def rank(self, log, row: int) -> list[int]:
        rooms = self.live.rooms(float(log.time[row]))
        return np.random.default_rng([self.seed, int(row)]).permutation(rooms).tolist()


class SimulatorRanker:
    """A ceiling only a simulator has: the live rooms by what the world's click model knows of the
    viewer at the request time. `what`: "taste" ranks by the viewer's true taste · the room's
    current content vector (content alone); "click" by the probability that the viewer clicks
    the room if shown it (taste, the streamer's popularity, the viewer's familiarity and follow as
    of the request, from the log)."""

    def __init__(self, world, live, state, what: str) -> None:
        from livemind.rec.eval.abtest import ground_truth

        if what not in ("taste", "click"):
            raise ValueError(f"what must be 'taste' or 'click', got {what!r}")
        self.sim, self.live, self.state, self.what = ground_truth(world), live, state, what
        self.name = ("simulator: true taste · content" if what == "taste" else
                     "simulator: true click probability")

    def rank(self, log, row: int) -> list[int]:
        t, v = float(log.time[row]), int(log.viewer[row])
        rooms = self.live.rooms(t)
        sim = self.sim
        if self.what == "taste":
            score = sim.seg_vectors[sim.segment_index(rooms, t)] @ sim.taste[v]
        else:
            s = self.live.streamer_of(rooms)
            n = len(rooms)
            score = sim.expected(np.full(n, v), rooms, t, watches=self.state.watches(np.full(n, v), s, t),
                                 follows=self.state.follows(np.full(n, v), s, t))["click"]
        return rooms[np.lexsort((rooms, -score))].tolist()


def paired_interval(a: np.ndarray, b: np.ndarray, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% paired-bootstrap interval of mean(a) - mean(b), a and b measured on the same targets."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(draws, len(a)))
    diff = np.asarray(a, dtype=np.float64)[idx].mean(1) - np.asarray(b, dtype=np.float64)[idx].mean(1)
    return float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975))
