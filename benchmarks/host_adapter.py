"""The shipped host student (`models/host-rft`, a LoRA adapter) made again from its file, and checked:
it is added onto SmolLM2 (`livemind think merge`), answers the same held-out tasks its benchmark
chose it on, greedily at its 256-token limit, and is scored per kind by the verifier. With
`--student` (the merged student the adapter was taken from) both answer and the answers are compared
one by one: the adapter is only right if nothing changed.

Run: python benchmarks/host_adapter.py [--student runs/rft_mix3b/rft/student] [--split validation]
     (test: --split test --final, as for any model: the shipped one's test figure is in docs/results.md)
Prints a per-kind table and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import ROOT
from rich.console import Console
from rich.table import Table

from livemind.demo import DEMO_SPLITS, demo_world_config
from livemind.think.adapter import adapter_meta, apply_adapter
from livemind.think.backends import Sampling
from livemind.think.report import ModelSpec, evaluate_models
from livemind.think.tasks import TASK_KINDS, final_split, make_splits
from livemind.world.simulator import LiveWorld


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default=str(ROOT / "models/host-rft"))
    parser.add_argument("--student", help="the merged student the adapter was taken from, to compare answer by answer")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--final", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--out", default="runs/host_adapter")
    parser.add_argument("--cache", help="an answers cache (SQLite; default OUT/answers.sqlite): a rerun answers only what changed")
    args = parser.parse_args()
    final_split(args.split, args.final)
    console = Console()
    t0 = time.perf_counter()
    meta = adapter_meta(args.adapter)
    merged = apply_adapter(args.adapter, Path(args.out) / "student")
    console.print(f"{args.adapter}: rank {meta['rank']}, {meta['matrices']} matrices, added onto {meta['base']} in "
                  f"{time.perf_counter() - t0:.1f} s")
    tasks = make_splits(LiveWorld(demo_world_config()).products, DEMO_SPLITS)[args.split]
    specs = [ModelSpec("adapter", str(merged))] + ([ModelSpec("student", args.student)] if args.student else [])
    sampling = Sampling(temperature=0.0, max_tokens=args.max_tokens)
    results = evaluate_models(specs, tasks, [], sampling, sampling, lambda m: console.print(m, markup=False),
                              cache=args.cache or Path(args.out) / "answers.sqlite")
    by = {r.name: r for r in results}
    table = Table(title=f"{len(tasks)} {args.split} tasks, greedy, up to {args.max_tokens} tokens")
    for col in ("kind", "tasks", *(f"{r.name} correct" for r in results)):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind in TASK_KINDS:
        if kind in by["adapter"].kinds:
            table.add_row(kind, f"{by['adapter'].kinds[kind]['n']:.0f}",
                          *(f"{r.kinds[kind]['correct']:.0%}" for r in results))
    table.add_row("all", str(len(tasks)), *(f"{r.summary['correct']:.1%}" for r in results))
    console.print(table)
    identical = None
    if args.student:
        identical = sum(a.completion.text == b.completion.text for a, b in zip(by["adapter"].scored, by["student"].scored))
        console.print(f"answers identical to the merged student's: {identical} of {len(tasks)}")
    print(json.dumps({"split": args.split, "tasks": len(tasks), "correct_adapter": round(by["adapter"].summary["correct"], 4),
                      "correct_student": round(by["student"].summary["correct"], 4) if args.student else None,
                      "identical": identical, "tokens_adapter": round(by["adapter"].summary["tokens_mean"], 1),
                      "kinds_adapter": {k: round(v["correct"], 4) for k, v in by["adapter"].kinds.items()},
                      "minutes": round((time.perf_counter() - t0) / 60, 1)}))


if __name__ == "__main__":
    main()
