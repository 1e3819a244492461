"""Which parts of the OneLive generator carry its ranking: variants trained on the same data and
scored on the same *validation* targets, with 95% paired-bootstrap intervals against a reference.

The world, tokenizer and split are `rec_quality.py`'s (`configs/world/rec.yaml`, tokenizer cached
in `--out`). Validation: targets in the last `--val-hours` before the held-out day; every variant
trains on the targets before them (the test day is never read here). Each variant is a config
(`--config`, or `--prior-config` for variants with the live-room prior) plus overrides of its
generator, scored exactly: every room live at the request time gets its score (log P(SID), plus
the prior with one), from the viewer's watches strictly before the request, as the service sees
them. HR@10 is the share of targets whose room ranks in the top 10 (ties count against it).

Run: python benchmarks/rec_ablation.py                      (the ablation table)
     python benchmarks/rec_ablation.py --variants A B ...   (some of them)
Prints a table and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import torch
from common import paired_interval, stage
from rich.console import Console
from rich.table import Table

from livemind.config import load_config
from livemind.rec.baselines.popularity import PopularityRanker
from livemind.rec.data.feedback import ViewerState
from livemind.rec.data.prepare import prepare
from livemind.rec.data.room_signals import RoomSignals
from livemind.rec.data.watch import History
from livemind.rec.model.generator import LOG_LP_WEIGHT_RANGE
from livemind.rec.model.prior import fit_room_prior
from livemind.rec.model.train import TrainConfig, prior_holdout, train_generator
from livemind.rec.tokenizer.dynamic import SidLayout
from livemind.rec.tokenizer.fit import TokenizerConfig, fit_or_load, laid_out
from livemind.world.simulator import WorldConfig, simulate_world

console = Console()
CORES = len(os.sched_getaffinity(0))

# name: (base config: "gen" or "prior", overrides of GeneratorConfig, overrides of TrainConfig, static SIDs)
VARIANTS: dict[str, tuple[str, dict, dict, bool]] = {
    "OneLive": ("gen", {}, {}, False),
    "no topic level": ("gen", {"topic_level": False}, {}, False),
    "no streamer digits": ("gen", {"identity_digits": 0}, {}, False),
    "residual codes only (no topic, no streamer digits)": ("gen", {"topic_level": False, "identity_digits": 0}, {}, False),
    "no live-room softmax": ("gen", {}, {"room_loss": 0.0}, False),
    "static SIDs (TIGER-style)": ("gen", {}, {}, True),
    "no time gate": ("gen", {"time_gate": False}, {}, False),
    "no time features": ("gen", {"time_features": False}, {}, False),
    "no QK norm": ("gen", {"qk_norm": False}, {}, False),
    "AR decoding (no MTP)": ("gen", {"decode": "ar"}, {}, False),
    "causal training histories": ("gen", {}, {"causal_history": True}, False),
    "1 epoch": ("gen", {}, {"epochs": 1}, False),
    "4 epochs": ("gen", {}, {"epochs": 4}, False),
    "dropout 0.2": ("gen", {"dropout": 0.2}, {}, False),
    "live-room softmax weight 1 (not 3)": ("gen", {}, {"room_loss": 1.0}, False),
    "31 sampled live rooms (not 15)": ("gen", {}, {"room_negatives": 31}, False),
    "OneLive + live-room prior": ("prior", {}, {}, False),
    "OneLive + live-room prior fit after": ("prior", {}, {"prior_joint": False}, False),
    "OneLive + live-room prior, live-room softmax weight 3": ("prior", {}, {"room_loss": 3.0}, False),
}


def exact_hits(model, data, signals, rows: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Rank (1-based; ties count against) of each target's room among every room live at its time."""
    H = model.cfg.max_history
    log, live = data.log, data.live
    ranks = np.zeros(len(rows), dtype=np.int64)
    with torch.inference_mode():
        for i in range(0, len(rows), chunk):
            part = rows[i:i + chunk]
            hists, cands, sigs, targets = [], [], [], []
            for r in part:
                v, t = int(log.viewer[r]), float(log.time[r])
                rooms, segs = live.live_segments(t)
                hists.append(log.history_at(v, t, H))
                cands.append(live.codes[segs])
                targets.append(int(np.flatnonzero(rooms == log.room[r])[0]) if (rooms == log.room[r]).any() else -1)
                sigs.append(signals.for_request(v, t, rooms) if signals is not None else np.zeros((len(rooms), 0)))
            C = max(len(c) for c in cands)
            cand = np.zeros((len(part), C, cands[0].shape[1]), dtype=np.int64)
            sig = np.zeros((len(part), C, sigs[0].shape[1]), dtype=np.float32)
            mask = np.zeros((len(part), C), dtype=bool)
            for j, (c, s) in enumerate(zip(cands, sigs)):
                cand[j, :len(c)], sig[j, :len(c)], mask[j, :len(c)] = c, s, True
            hist = History.stack(hists)
            scores = model.room_scores(hist, torch.from_numpy(cand), torch.from_numpy(sig)).double().numpy()
            scores = np.where(mask, scores, -np.inf)
            for j, tgt in enumerate(targets):
                ranks[i + j] = 0 if tgt < 0 else int((scores[j] >= scores[j, tgt]).sum())
    return ranks


def popularity_ranks(data, rows: np.ndarray) -> np.ndarray:
    """Rank of each target's room among the live rooms by their watches in the last hour."""
    pop = PopularityRanker(data.live)
    out = np.zeros(len(rows), dtype=np.int64)
    for i, r in enumerate(rows):
        t = float(data.log.time[r])
        rooms, _ = data.live.live_segments(t)
        hit = np.flatnonzero(rooms == data.log.room[r])
        if len(hit):
            score = pop.watches(data.log, rooms, t).astype(float)
            s = score[hit[0]]
            out[i] = int((score > s).sum()) + 1 + int((score == s).sum() - 1) // 2  # ties: the middle
    return out


def layout_of(base: SidLayout, gover: dict) -> SidLayout:
    """The SID layout of a variant: the tokenizer config's, with the variant's `topic_level` and
    `identity_digits` (popped from its generator overrides) when it names them."""
    return SidLayout(topic=gover.pop("topic_level", base.topic),
                     identity_digits=gover.pop("identity_digits", base.identity_digits))


_CTX: dict = {}


def run_variant(name: str) -> dict:
    ctx = _CTX
    torch.set_num_threads(ctx["threads"])
    base, gover, tover, static = ctx["variants"][name]
    cfg = ctx["prior"] if base == "prior" else ctx["gen"]
    gover = dict(gover)
    layout = layout_of(ctx["layout"], gover)
    data, signals = ctx["data"][layout]
    gover |= {"levels": data.code_vectors.shape[0], "level_weights": None}
    cfg = dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, **gover), **tover)
    if static and cfg.room_loss:  # the softmax over live rooms reads their static SIDs
        signals = RoomSignals(data.static_log, ctx["state"], data.static_live, cfg.generator.signals)
    signals = signals if cfg.room_loss else None
    t = time.perf_counter()
    out = Path(ctx["out"]) / "ablation" / name.replace(" ", "_").replace(",", "").replace("+", "and")
    res = train_generator(cfg, data.log_for(static), ctx["train_rows"], out, resume=False, live=data.live_for(static),
                          code_vectors=data.code_vectors, signals=signals)
    train_s = time.perf_counter() - t
    view = dataclasses.replace(data, log=data.log_for(static), live=data.live_for(static))
    ranks = exact_hits(res.model, view, signals, ctx["val_rows"])
    n_params = sum(p.numel() for p in res.model.parameters())
    out = {"name": name, "ranks": ranks, "train_s": train_s, "params": n_params, "steps": len(res.losses),
           "loss": (float(np.mean(res.losses[:20])), float(np.mean(res.losses[-20:]))),
           "lp_weight": [round(w, 3) for w in res.model.lp_weight().tolist()], "seconds": time.perf_counter() - t}
    if cfg.generator.room_signals:  # the same prior refit with log P(SID) at its floor: the prior alone
        _, held = prior_holdout(cfg, data.log, ctx["train_rows"])
        with torch.no_grad():
            res.model.log_lp_scale.fill_(LOG_LP_WEIGHT_RANGE[0])
        fit_room_prior(res.model, signals, held, causal=cfg.causal_history, fit_weight=False,
                       max_entries=cfg.prior_refit_entries)
        out["prior_ranks"] = exact_hits(res.model, view, signals, ctx["val_rows"])
    return out


def validation_data(args: argparse.Namespace, layouts: set[SidLayout], t0: float) -> tuple:
    """({layout: (RecData, RoomSignals)}, ViewerState, training rows, validation rows) of the benchmark
    world: the tokenizer fit (or cached) on the first two days, every watch before the last
    `args.val_hours` of them trains, a seeded sample of `args.targets` in those hours validates."""
    wcfg = load_config(args.world_config, WorldConfig)
    world = simulate_world(wcfg)
    split = wcfg.start_time + wcfg.days * 86400 * 2 / 3
    tcfg = dataclasses.replace(load_config(args.tokenizer_config, TokenizerConfig), train_until=split)
    tok = fit_or_load(world, tcfg, wcfg, Path(args.out), lambda m: stage(m, t0))
    state = ViewerState.from_world(world)
    signal_cfg = load_config(args.prior_config, TrainConfig).generator.signals
    prepared = {}
    for layout in sorted(layouts, key=lambda x: (x.topic, x.identity_digits)):
        d = prepare(world, laid_out(tok, world, dataclasses.replace(tcfg, sid=layout)), split, seed=0)
        prepared[layout] = (d, RoomSignals(d.log, state, d.live, signal_cfg))
    log = next(iter(prepared.values()))[0].log  # the rows are the same whatever the layout
    val_start = split - args.val_hours * 3600
    val_rows = log.examples(start=val_start, end=split)
    val_rows = np.sort(np.random.default_rng(1).choice(val_rows, min(args.targets, len(val_rows)), replace=False))
    return prepared, state, log.examples(end=val_start, min_history=1), val_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="*", default=None, help="names of VARIANTS (default: all)")
    parser.add_argument("--reference", default="OneLive", help="the variant every interval is paired against")
    parser.add_argument("--world-config", default="configs/world/rec.yaml")
    parser.add_argument("--tokenizer-config", default="configs/rec/tokenizer.yaml")
    parser.add_argument("--config", default="configs/rec/generator.yaml")
    parser.add_argument("--prior-config", default="configs/rec/generator-prior.yaml")
    parser.add_argument("--val-hours", type=float, default=12.0)
    parser.add_argument("--targets", type=int, default=2000, help="validation targets (a seeded sample)")
    parser.add_argument("--out", default="runs/bench_rec")
    parser.add_argument("--jobs", type=int, default=CORES)
    args = parser.parse_args()
    t0 = time.perf_counter()
    tcfg = load_config(args.tokenizer_config, TokenizerConfig)
    layouts = {layout_of(tcfg.sid, dict(VARIANTS[n][1])) for n in (args.variants or VARIANTS) if n in VARIANTS}
    prepared, state, train_rows, val_rows = validation_data(args, layouts, t0)
    data = prepared[tcfg.sid][0] if tcfg.sid in prepared else next(iter(prepared.values()))[0]
    gen, prior = load_config(args.config, TrainConfig), load_config(args.prior_config, TrainConfig)
    names = args.variants or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    lanes = max(1, min(args.jobs, len(names)))
    _CTX.update(data=prepared, layout=tcfg.sid, state=state, gen=gen, prior=prior, variants=VARIANTS, out=args.out,
                train_rows=train_rows, val_rows=val_rows, threads=max(1, CORES // lanes))
    stage(f"{len(train_rows):,} training targets, {len(val_rows):,} validation targets; {len(names)} variants, "
          f"{lanes} at a time", t0)
    done = {}
    pool = mp.get_context("fork").Pool(lanes) if lanes > 1 else None
    try:
        for r in (pool.imap_unordered(run_variant, names, chunksize=1) if pool else map(run_variant, names)):
            done[r["name"]] = r
            hr = float(np.mean((r["ranks"] > 0) & (r["ranks"] <= 10)))
            stage(f"{r['name']}: HR@10 {hr:.4f}, {r['steps']} steps in {r['train_s']:.0f} s, loss "
                  f"{r['loss'][0]:.2f} -> {r['loss'][1]:.2f}, weights of log P(SID) {r['lp_weight']}", t0)
    finally:
        if pool:
            pool.close()
            pool.join()
    ranks = {n: done[n]["ranks"] for n in names}
    for n in names:
        if "prior_ranks" in done[n]:
            ranks[f"{n}: the prior alone"] = done[n]["prior_ranks"]
            done[f"{n}: the prior alone"] = done[n]
    ranks["popularity (live)"] = popularity_ranks(data, val_rows)
    done["popularity (live)"] = {"params": 0, "train_s": 0.0}
    repeat = data.log.is_repeat(val_rows)
    hits = {n: ((r > 0) & (r <= 10)).astype(float) for n, r in ranks.items()}
    ref = args.reference if args.reference in hits else names[0]
    table = Table(title=f"Validation HR@10, {len(val_rows):,} targets in the {args.val_hours:g} h before the held-out day "
                        f"(every live room scored); intervals paired against '{ref}'")
    for col in ("variant", "HR@10", "new", "repeat", f"minus '{ref}' (95% CI)", "params", "train s"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    rows = {}
    for n in hits:
        lo, hi = paired_interval(hits[n], hits[ref])
        d = hits[n].mean() - hits[ref].mean()
        new, rep = hits[n][~repeat].mean(), hits[n][repeat].mean()
        table.add_row(n, f"{hits[n].mean():.4f}", f"{new:.4f}", f"{rep:.4f}", f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]",
                      f"{done[n]['params']:,}", f"{done[n]['train_s']:.0f}")
        rows[n] = {"hr10": round(float(hits[n].mean()), 4), "hr10_new": round(float(new), 4),
                   "hr10_repeat": round(float(rep), 4), "diff": round(float(d), 4),
                   "ci": [round(lo, 4), round(hi, 4)], "params": done[n]["params"],
                   "train_s": round(done[n]["train_s"], 1)}
    console.print(table)
    print(json.dumps({"reference": ref, "n_targets": int(len(val_rows)), "rows": rows,
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
