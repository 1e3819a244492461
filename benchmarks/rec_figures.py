"""The OneLive paper's evidence on our world: QK norm and training stability (its Figure 3) and
quality against parameters (its Figure 4). Same world, tokenizer and validation split as
`rec_ablation.py` (the test day is never read here).

- `--figure 3`: the generator made deep and wide and trained at a high learning rate, with and
  without QK norm, the largest attention logit of each main layer and the loss at every step
  (SID cross-entropy only: stability is a property of the attention, not of the room softmax).
- `--figure 4`: the shipped recipe (`configs/rec/generator.yaml`) at four sizes: the last
  training loss, validation HR@10 (every live room scored) and the compute each took (training
  FLOPs ~ 6 x parameters x tokens, and wall seconds on one thread).

Run: python benchmarks/rec_figures.py --figure 3
     python benchmarks/rec_figures.py --figure 4
Writes docs/img/rec_qk_norm.png or docs/img/rec_scaling.png; prints a table and, as its last line,
one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, stage
from rec_ablation import exact_hits, validation_data
from rich.console import Console
from rich.table import Table

from livemind.config import load_config
from livemind.rec.model.train import GeneratorTrainer, TrainConfig
from livemind.rec.tokenizer.fit import TokenizerConfig
from livemind.report import figure

console = Console()
CORES = len(os.sched_getaffinity(0))
SIZES = {  # name: (d_model, n_layers, n_heads)
    "XS": (32, 2, 2), "S (shipped)": (64, 3, 4), "M": (96, 4, 4), "L": (128, 6, 4),
}
_CTX: dict = {}


def train_one(job: tuple) -> dict:
    """Train one config on the validation split's training rows; per step: loss and, when asked,
    each main layer's largest attention logit."""
    name, cfg, track = job
    ctx = _CTX
    torch.set_num_threads(ctx["threads"])
    data, signals = ctx["data"]
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = GeneratorTrainer(cfg, data.log, ctx["train_rows"], tmp, data.live, data.code_vectors,
                                   signals if cfg.room_loss else None)
        trainer.setup(resume=False)
        logits: list[list[float]] = []
        for block in trainer.model.blocks:
            block.attn.track_logits = track
        trainer.train(progress=(lambda *_: logits.append([b.attn.max_logit for b in trainer.model.blocks]))
                      if track else None)
        seconds = time.perf_counter() - t
        model = trainer.model.eval()
        for block in model.blocks:
            block.attn.track_logits = False
        finite = all(np.isfinite(trainer.losses))
        ranks = exact_hits(model, data, signals if cfg.room_loss else None, ctx["val_rows"]) if finite else None
    params = sum(p.numel() for p in model.parameters())
    samples = len(trainer.losses) * cfg.batch_size
    tokens = samples * (cfg.generator.max_history + cfg.generator.levels)  # an upper bound: histories are shorter
    return {"name": name, "losses": trainer.losses, "logits": logits, "seconds": seconds, "params": params,
            "flops": 6.0 * params * tokens,
            "hr10": float(np.mean((ranks > 0) & (ranks <= 10))) if ranks is not None else float("nan")}


def run(jobs: list[tuple], lanes: int, t0: float) -> dict[str, dict]:
    done = {}
    pool = mp.get_context("fork").Pool(lanes) if lanes > 1 else None
    try:
        for r in (pool.imap_unordered(train_one, jobs, chunksize=1) if pool else map(train_one, jobs)):
            done[r["name"]] = r
            stage(f"{r['name']}: {len(r['losses'])} steps in {r['seconds']:.0f} s, loss {np.mean(r['losses'][:10]):.2f} -> "
                  f"{np.mean(r['losses'][-10:]):.2f}, validation HR@10 {r['hr10']:.4f}", t0)
    finally:
        if pool:
            pool.close()
            pool.join()
    return done


def figure3(args, gen: TrainConfig, t0: float) -> dict:
    g = dataclasses.replace(gen.generator, d_model=args.width, n_layers=args.depth, n_heads=4)
    jobs = []
    for lr in args.lrs:
        for qk in (True, False):
            cfg = dataclasses.replace(gen, room_loss=0.0, lr=lr, epochs=args.epochs,
                                      generator=dataclasses.replace(g, qk_norm=qk))
            jobs.append((f"lr {lr:g}, {'QK norm' if qk else 'no QK norm'}", cfg, True))
    done = run(jobs, max(1, min(args.jobs, len(jobs))), t0)
    out = ROOT / "docs/img/rec_qk_norm.png"
    with figure(out, ncols=2, nrows=len(args.lrs), size=(10, 3.2 * len(args.lrs)), squeeze=False) as (_, axes):
        for i, lr in enumerate(args.lrs):
            for qk, style in ((True, "-"), (False, "--")):
                r = done[f"lr {lr:g}, {'QK norm' if qk else 'no QK norm'}"]
                label = "QK norm" if qk else "no QK norm"
                axes[i, 0].plot(r["losses"], style, label=label, alpha=0.8)
                peak = np.array([[np.nan if v is None else v for v in step] for step in r["logits"]])
                axes[i, 1].plot(np.nanmax(peak, axis=1), style, label=f"{label} (largest of {peak.shape[1]} layers)")
            axes[i, 0].set(title=f"loss, lr {lr:g}, {args.depth} layers x {args.width}", xlabel="step", ylabel="SID cross-entropy")
            axes[i, 1].set(title="largest attention logit", xlabel="step", yscale="log")
            axes[i, 0].legend()
            axes[i, 1].legend()
    table = Table(title=f"QK norm, {args.depth} layers x {args.width} wide, {args.epochs} epochs (validation split)")
    for col in ("run", "loss first 10 / last 10", "max loss", "largest logit, last step (per layer)", "HR@10"):
        table.add_column(col)
    rows = {}
    for name, r in done.items():
        last = r["logits"][-1] if r["logits"] else []
        table.add_row(name, f"{np.mean(r['losses'][:10]):.2f} / {np.mean(r['losses'][-10:]):.2f}", f"{np.max(r['losses']):.2f}",
                      " ".join(f"{v:.1f}" for v in last), f"{r['hr10']:.4f}")
        rows[name] = {"loss_last": round(float(np.mean(r["losses"][-10:])), 4), "loss_max": round(float(np.max(r["losses"])), 4),
                      "logit_last": [round(v, 2) for v in last],
                      "logit_max": round(float(np.nanmax([v for s in r["logits"] for v in s])), 2), "hr10": round(r["hr10"], 4)}
    console.print(table)
    console.print(f"plot: {out}")
    return {"figure": 3, "depth": args.depth, "width": args.width, "rows": rows}


def figure4(args, gen: TrainConfig, t0: float) -> dict:
    jobs = [(name, dataclasses.replace(gen, generator=dataclasses.replace(gen.generator, d_model=d, n_layers=n, n_heads=h)),
             False) for name, (d, n, h) in SIZES.items()]
    done = run(jobs[::-1], max(1, min(args.jobs, len(jobs))), t0)  # the largest first
    done = {n: done[n] for n in SIZES}
    out = ROOT / "docs/img/rec_scaling.png"
    params = [done[n]["params"] for n in SIZES]
    with figure(out, ncols=2, size=(10, 3.5)) as (_, (a, b)):
        a.plot(params, [np.mean(done[n]["losses"][-20:]) for n in SIZES], "o-")
        a.set(xscale="log", xlabel="parameters", ylabel="training loss, last 20 steps", title="loss vs parameters")
        b.plot(params, [done[n]["hr10"] for n in SIZES], "o-")
        b.set(xscale="log", xlabel="parameters", ylabel="validation HR@10", title="HR@10 vs parameters")
        for n, p in zip(SIZES, params):
            b.annotate(n, (p, done[n]["hr10"]))
    table = Table(title="The shipped recipe at four sizes (validation split)")
    for col in ("size", "d x layers", "params", "loss, last 20 steps", "HR@10", "train FLOPs", "train s (1 thread)"):
        table.add_column(col, justify="left" if col == "size" else "right")
    rows = {}
    for n, (d, layers, _) in SIZES.items():
        r = done[n]
        table.add_row(n, f"{d} x {layers}", f"{r['params']:,}", f"{np.mean(r['losses'][-20:]):.3f}", f"{r['hr10']:.4f}",
                      f"{r['flops']:.2e}", f"{r['seconds']:.0f}")
        rows[n] = {"params": r["params"], "loss_last": round(float(np.mean(r["losses"][-20:])), 4),
                   "hr10": round(r["hr10"], 4), "flops": float(f"{r['flops']:.3e}"), "seconds": round(r["seconds"], 1)}
    console.print(table)
    console.print(f"plot: {out}")
    return {"figure": 4, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--figure", type=int, choices=(3, 4), required=True)
    parser.add_argument("--world-config", default="configs/world/rec.yaml")
    parser.add_argument("--tokenizer-config", default="configs/rec/tokenizer.yaml")
    parser.add_argument("--config", default="configs/rec/generator.yaml")
    parser.add_argument("--prior-config", default="configs/rec/generator-prior.yaml")
    parser.add_argument("--val-hours", type=float, default=12.0)
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--out", default="runs/bench_rec")
    parser.add_argument("--jobs", type=int, default=CORES)
    parser.add_argument("--depth", type=int, default=8, help="figure 3: main layers")
    parser.add_argument("--width", type=int, default=128, help="figure 3: d_model")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.01], help="figure 3: learning rates")
    parser.add_argument("--epochs", type=int, default=1, help="figure 3: epochs")
    args = parser.parse_args()
    t0 = time.perf_counter()
    layout = load_config(args.tokenizer_config, TokenizerConfig).sid
    prepared, _, train_rows, val_rows = validation_data(args, {layout}, t0)
    jobs = 4 if args.figure == 4 else 2 * len(args.lrs)
    _CTX.update(data=prepared[layout], train_rows=train_rows, val_rows=val_rows,
                threads=max(1, CORES // max(1, min(args.jobs, jobs))))
    gen = load_config(args.config, TrainConfig)
    result = figure3(args, gen, t0) if args.figure == 3 else figure4(args, gen, t0)
    print(json.dumps(result | {"seconds": round(time.perf_counter() - t0, 1), "cores": CORES,
                                "out": str(Path(args.out))}))


if __name__ == "__main__":
    main()
