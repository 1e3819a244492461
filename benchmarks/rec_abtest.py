"""OneLive multi-objective alignment and the simulated online A/B test (its bars).

World `configs/world/rec.yaml` (three days), the tokenizer of benchmarks/rec_quality.py (fit on
the first two days, cached), the pretrained generator (by default OneLive with the live-room prior,
`configs/rec/generator-prior.yaml`, trained on watches before the split, cached and shared with
rec_quality.py; `--generator-config configs/rec/generator.yaml` aligns the generator without it), then:
1. the reward model on impressions before the split, calibrated on those after (table + plot);
2. GRPO alignment (`configs/rec/align.yaml`) on viewer states before the split (curve);
3. HR@10 of the pretrained and aligned generators on held-out watches after the split;
4. the A/B over visits after the split: popularity, cascade (popularity retrieval -> reward-model
   ranking), OneLive pretrained and aligned, and, for scale, the simulator's oracle (the best
   slate under the ground truth, which no real policy can know). Primary: one room per visit
   (`configs/rec/abtest.yaml`); also a slate of 8, the logging policy's.

Run: python benchmarks/rec_abtest.py        (--fresh retrains what is cached, except the tokenizer)
Prints tables and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from common import stage
from rich.console import Console

from livemind.config import load_config
from livemind.rec.alignment.align import AlignConfig
from livemind.rec.alignment.pipeline import aligned_for, reward_model_for
from livemind.rec.data.feedback import ViewerState
from livemind.rec.data.prepare import prepare
from livemind.rec.eval.abtest import (
    ABConfig,
    ABResult,
    abtest_table,
    ground_truth,
    plot_abtest,
    run_abtest,
    sample_visits,
    standard_policies,
)
from livemind.rec.eval.offline import GeneratorRanker, evaluate
from livemind.rec.model.prior import prior_signals
from livemind.rec.model.train import TrainConfig, train_generator
from livemind.rec.tokenizer.fit import TokenizerConfig, fit_or_load
from livemind.report import calibration_table, rec_metrics_table
from livemind.world.simulator import LiveWorld, WorldConfig, simulate_world

console = Console(width=200)




@dataclass
class OraclePolicy:
    """The best slate under the simulator's ground truth: an upper bound for scale, not a policy."""

    sim: LiveWorld
    state: ViewerState
    weights: dict[str, float]
    name: str = "oracle (ground truth)"

    def slate(self, viewer: int, t: float, k: int) -> list[int]:
        rooms = self.sim.live_rooms(t)
        v, tt, s = np.full(len(rooms), viewer), np.full(len(rooms), t), self.sim.room_streamer[rooms]
        value = self.sim.utility(v, rooms, tt, self.weights, self.state.watches(v, s, tt), self.state.follows(v, s, tt))
        return rooms[np.lexsort((rooms, -value))][:k].tolist()


def summary(res: ABResult) -> dict:
    lift = res.lift("OneLive aligned", "OneLive pretrained", "weighted")
    return {
        "lift_weighted_aligned_vs_pretrained": round(lift[0], 4), "lift_ci_low": round(lift[1], 4),
        "lift_ci_high": round(lift[2], 4),
        "lift_watch_vs_cascade": round(res.lift("OneLive aligned", "cascade", "watch_minutes")[0], 4),
        "lift_gmv_vs_cascade": round(res.lift("OneLive aligned", "cascade", "gmv")[0], 4),
        "per_1000": {p: {m: round(v, 3) for m, v in res.per_1000(p).items()} for p in res.policies},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-config", default="configs/world/rec.yaml")
    parser.add_argument("--tokenizer-config", default="configs/rec/tokenizer.yaml")
    parser.add_argument("--generator-config", default="configs/rec/generator-prior.yaml")
    parser.add_argument("--align-config", default="configs/rec/align.yaml")
    parser.add_argument("--abtest-config", default="configs/rec/abtest.yaml")
    parser.add_argument("--targets", type=int, default=1500, help="held-out watches for HR@10")
    parser.add_argument("--slate8-visits", type=int, default=1500, help="visits of the 8-room A/B")
    parser.add_argument("--out", default="runs/bench_rec", help="shares the tokenizer and generator of rec_quality.py")
    parser.add_argument("--fresh", action="store_true", help="retrain generator, reward model and alignment")
    args = parser.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    out = Path(args.out)

    wcfg = load_config(args.world_config, WorldConfig)
    world = simulate_world(wcfg)
    split = wcfg.start_time + wcfg.days * 86400 * 2 / 3
    stage(f"world simulated: {world.events.num_rows:,} events, {world.rooms.num_rows:,} rooms", t0)
    tcfg = dataclasses.replace(load_config(args.tokenizer_config, TokenizerConfig), train_until=split)
    tok = fit_or_load(world, tcfg, wcfg, out, lambda m: stage(m, t0))
    data = prepare(world, tok, split, n_eval=args.targets, seed=0)
    state = ViewerState.from_world(world)
    gcfg = load_config(args.generator_config, TrainConfig)
    gen_dir = out / ("gen-prior" if gcfg.room_loss else "gen-onelive")  # the directories of rec_quality.py
    if args.fresh:
        for d in (gen_dir, out / "reward_model", out / "aligned"):
            shutil.rmtree(d, ignore_errors=True)

    signals = prior_signals(gcfg.generator, data.log, state, data.live)
    gen = train_generator(gcfg, data.log, data.train_rows, gen_dir, resume=True, live=data.live,
                          code_vectors=data.code_vectors, signals=signals)
    stage(f"pretrained generator {gen_dir.name}: "
          f"{'reused' if gen.samples == 0 else f'trained, {gen.samples_per_s:,.0f} samples/s'}", t0)

    acfg = load_config(args.align_config, AlignConfig)
    t = time.perf_counter()
    reward, cal, trained = reward_model_for(data, state, acfg.reward_model, out / "reward_model")
    stage(f"reward model {'trained' if trained else 'reused'} ({time.perf_counter() - t:.0f} s)", t0)
    console.print(calibration_table(cal.rows, "Reward-model calibration, impressions after the split"))
    t = time.perf_counter()
    aligned, history, ran = aligned_for(data, gen.model, reward, state, acfg, out / "aligned",
                                        lambda i, n, s: stage(f"  align step {i}/{n}: value {s['value']:.3f} vs "
                                                              f"{s['value_ref']:.3f}, KL {s['kl']:.2f}", t0)
                                        if i % 25 == 0 else None)
    align_s = time.perf_counter() - t
    stage(f"alignment {'ran' if ran else 'reused'}: {len(history)} steps ({align_s:.0f} s); reward-model value "
          f"{np.mean([h['value_ref'] for h in history[-20:]]):.3f} -> {np.mean([h['value'] for h in history[-20:]]):.3f}", t0)

    H = gcfg.generator.max_history
    hr = {name: evaluate(GeneratorRanker(m, data.live, H, name=name, signals=signals), data.log, data.eval_rows)
          for name, m in (("OneLive pretrained", gen.model), ("OneLive aligned", aligned))}
    console.print(rec_metrics_table(hr, f"Next room, {len(data.eval_rows):,} held-out watches after the split"))
    hr_change = hr["OneLive aligned"]["all"]["hr@10"] / hr["OneLive pretrained"]["all"]["hr@10"] - 1
    stage("HR@10 evaluated", t0)

    sim = ground_truth(world)
    gens = {"OneLive pretrained": gen.model, "OneLive aligned": aligned}
    results = {}
    for label, cfg in (("slate1", load_config(args.abtest_config, ABConfig)),
                       ("slate8", dataclasses.replace(load_config(args.abtest_config, ABConfig), slate=8,
                                                      visits=args.slate8_visits))):
        cfg = dataclasses.replace(cfg, objectives=acfg.objectives)
        policies = standard_policies(data, state, reward, cfg, gens) + [OraclePolicy(sim, state, acfg.objectives)]
        v, tt = sample_visits(world, split, wcfg.end_time, cfg.visits, cfg.seed)
        t = time.perf_counter()
        res = run_abtest(sim, state, policies, v, tt, cfg)
        stage(f"A/B {label}: {len(v):,} visits x {cfg.slate} in {time.perf_counter() - t:.0f} s", t0)
        console.print(abtest_table(res, "cascade", f"Simulated A/B, {len(v):,} visits after the split, {cfg.slate} room(s) "
                                                   "each: per 1,000 impressions [95% CI]; lift vs the cascade"))
        lift = res.lift("OneLive aligned", "OneLive pretrained", "weighted")
        console.print(f"aligned vs pretrained, weighted objective: {lift[0]:+.2%} [{lift[1]:+.2%}, {lift[2]:+.2%}]")
        plot_abtest(res, "cascade", out / f"abtest_{label}.png")
        results[label] = summary(res)

    console.print(f"plots: {out / 'reward_model' / 'calibration.png'}, {out / 'aligned' / 'align.png'}, "
                  f"{out / 'abtest_slate1.png'}, {out / 'abtest_slate8.png'}")
    s1 = results["slate1"]
    bars = [("aligned vs pretrained, weighted objective per 1,000 impressions", ">= +5%, CI above 0",
             f"{s1['lift_weighted_aligned_vs_pretrained']:+.2%} [{s1['lift_ci_low']:+.2%}, {s1['lift_ci_high']:+.2%}]"),
            ("offline HR@10, aligned vs pretrained", ">= -2%", f"{hr_change:+.2%}"),
            ("aligned vs cascade, watch minutes", "ahead", f"{s1['lift_watch_vs_cascade']:+.2%}"),
            ("aligned vs cascade, GMV", "ahead", f"{s1['lift_gmv_vs_cascade']:+.2%}")]
    for what, bar, got in bars:
        console.print(f"  {what}: bar {bar}; measured {got}")
    out_json = {
        "lift_weighted_aligned_vs_pretrained": s1["lift_weighted_aligned_vs_pretrained"], "lift_ci_low": s1["lift_ci_low"],
        "hr10_rel_change": round(hr_change, 4), "lift_watch_vs_cascade": s1["lift_watch_vs_cascade"],
        "lift_gmv_vs_cascade": s1["lift_gmv_vs_cascade"],
        "hr10_pretrained": round(hr["OneLive pretrained"]["all"]["hr@10"], 4),
        "hr10_aligned": round(hr["OneLive aligned"]["all"]["hr@10"], 4),
        "slate8": {k: v for k, v in results["slate8"].items() if k != "per_1000"},
        "per_1000_slate1": s1["per_1000"], "per_1000_slate8": results["slate8"]["per_1000"],
        "calibration": {k: {m: round(x, 4) if isinstance(x, float) else x for m, x in r.items()} for k, r in cal.rows.items()},
        "align_seconds": round(align_s, 1) if ran else None, "generator": gen_dir.name, "tokenizer_version": tok.version,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    console.print(f"total {out_json['seconds']:.0f} s")
    print(json.dumps(out_json))


if __name__ == "__main__":
    main()
