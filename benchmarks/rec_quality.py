"""OneLive generator against ID-based baselines on the same data, plus the SASRec paper's protocol
(its bars).

Simulated world (`configs/world/rec.yaml`): the tokenizer is fit on the first two days, the
generator and every baseline train on watches whose target falls in the first two days, and all
are evaluated on targets in the third day (the test split, read once per model); candidates are
the rooms live at the request time. Configs were chosen on validation targets before it
(`benchmarks/rec_ablation.py`). Rows:
- OneLive alone (`configs/rec/generator.yaml`: 6-level SIDs [topic, 3 content codes, 2 streamer
  digits], trained by the SID cross-entropy plus a softmax over the rooms live at each target's
  time), and the same generator without that softmax decoded by MTP and by the full-stack AR
  decoder (the MTP / AR pair: same training, two decoders);
- OneLive with the live-room prior (`configs/rec/generator-prior.yaml`: identity signals of each
  live room beside log P(SID)), and that prior alone: refit on the same held-out hours with the
  weight of log P(SID) at its floor, so the difference is what the generator adds (95% paired
  bootstrap interval on the same targets);
- baselines: popularity among live rooms, SASRec over room IDs and the availability-aware,
  repeat-aware SASRec (LiveRec-style);
- the floor and two ceilings: random order, and what only the simulator knows (the viewer's true
  taste · the room's current content; the true click probability).
The full run adds the component ablations (no time gate, no QK norm, static SIDs). Also: MTP vs
AR requests/s on the same requests, and training samples/s.

`--quick` runs only the simulated world (budget: 15 minutes on 2 cores once the tokenizer is cached
in `--out`; fitting it on a clean machine takes another ~6 minutes). The models train
`--jobs` at a time (default: one per core), each in its own process. The full run adds
sasrec-games (`../shared/data/sasrec-games/Video.txt`, or `--games PATH`): SASRec under the
paper's leave-one-out protocol (100 sampled negatives) and full ranking, and the OneLive
generator on the same split, with item SIDs from residual k-means over SASRec's item embeddings.

`--world large` (`configs/world/large.yaml`: 50,000 viewers, 3,000 streamers, ~240 rooms live per
request and ~500 at the peak) runs the same models on an evening's scale, every key suffixed `_large`:
the generators train on a seeded sample of 140,000 of its ~640,000 training targets, the tokenizer
stops at 2,000 steps, and sasrec-games is left out (it is one data set whatever the world); with
`--quick` the generators train on 35,000 targets, a check of the pipeline at scale whose numbers are
a smaller training's (the bars are read on the full run).

Run: python benchmarks/rec_quality.py --quick      (or without --quick for everything)
Prints tables and, as its last line, one JSON object.
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
from common import RandomRanker, SimulatorRanker, paired_interval, stage
from rich.console import Console
from rich.table import Table

from livemind.config import load_config
from livemind.paths import shared_data_dir
from livemind.rec.baselines.live_sasrec import SASRecRanker, live_sasrec_config, train_live_sasrec
from livemind.rec.baselines.popularity import PopularityRanker
from livemind.rec.baselines.sasrec import SASRecConfig, train_sasrec, unseen_negatives
from livemind.rec.data.feedback import ViewerState
from livemind.rec.data.prepare import RecData, prepare
from livemind.rec.data.room_signals import RoomSignals
from livemind.rec.eval.offline import GeneratorRanker, metrics, target_ranks
from livemind.rec.eval.protocol import evaluate_full, evaluate_sampled, leave_one_out
from livemind.rec.eval.sequences import generator_full_ranking, generator_scores, item_sids, sequence_log, split_summary
from livemind.rec.model.beam import recommend
from livemind.rec.model.checkpoint import load_generator
from livemind.rec.model.generator import LOG_LP_WEIGHT_RANGE
from livemind.rec.model.prior import fit_room_prior, prior_signals
from livemind.rec.model.train import GeneratorTrainer, TrainConfig, prior_holdout, train_generator
from livemind.rec.tokenizer.fit import TokenizerConfig, fit_or_load
from livemind.rec.tokenizer.rq import RQConfig
from livemind.report import rec_metrics_table
from livemind.world.datasets.sequences import read_sequences
from livemind.world.simulator import WorldConfig, simulate_world

console = Console()
CORES = len(os.sched_getaffinity(0))
WORLDS = {"default": "configs/world/rec.yaml", "large": "configs/world/large.yaml"}
# what a world of an evening's scale trains on, to fit these 2 cores: a seeded sample of the generators'
# training targets (twice the default world's 70k, 22% of the large world's) and a cap on the tokenizer's
# steps (its ~1M positives seen about once); SASRec trains on every viewer's full sequence (the baselines
# lose nothing). With 70k targets the generator with the prior was 1.140x the best baseline (docs/results.md).
SAMPLED = {"large": {"train_targets": 140_000, "tokenizer_steps": 2_000}}
# --quick on the large world: a quarter of those targets and a quarter of the prior refit's entries (the refit
# and the prior's two evaluations took 640 of the prior job's 731 s with 2M), for a check within 15 minutes
# (its numbers are a smaller training's: the bars are read on the full run)
SAMPLED_QUICK = {"large": {"train_targets": 35_000, "refit_entries": 500_000}}




def training_rate(cfg: TrainConfig, data: RecData, signals: RoomSignals | None, steps: int = 20) -> float:
    """Training samples/s of one process on every core: `steps` timed steps after 3 warm-up steps
    (into a temporary directory; nothing is kept)."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = GeneratorTrainer(cfg, data.log, data.train_rows, tmp, data.live, data.code_vectors,
                                   signals if cfg.room_loss else None)
        trainer.setup(resume=False)
        trainer.train(max_steps=3)
        t = time.perf_counter()
        trainer.train(max_steps=steps)
        return steps * cfg.batch_size / (time.perf_counter() - t)


def mtp_vs_ar(data: RecData, mtp, ar, rows: np.ndarray, max_history: int, beam: int) -> tuple[float, float]:
    """Requests/s of recommend() with each model on the same requests (snapshots built beforehand)."""
    reqs = [(data.log.batch(np.array([r]), max_history)[0], data.live.snapshot(float(data.log.time[r]))) for r in rows]
    rates = []
    for model in (mtp, ar):
        with torch.inference_mode():
            for hist, snap in reqs[:20]:  # warm-up
                recommend(model, hist, snap, 10, beam)
            t = time.perf_counter()
            for hist, snap in reqs:
                recommend(model, hist, snap, 10, beam)
        rates.append(len(reqs) / (time.perf_counter() - t))
    return rates[0], rates[1]


# what every job reads, set before the pool forks its workers (they inherit it, nothing is pickled)
_JOB_CONTEXT: dict = {}


def run_job(job: tuple) -> dict:
    """Train one model and evaluate it on the held-out targets: in a worker of the pool (one lane of
    `--jobs`, with its share of the cores) or in this process."""
    ctx = _JOB_CONTEXT
    torch.set_num_threads(ctx["threads"])
    data, args = ctx["data"], ctx["args"]
    kind, name = job[0], job[1]
    t = time.perf_counter()
    if kind == "sasrec":
        aware = job[2]
        model, _ = train_live_sasrec(data.log, data.live, data.split, dataclasses.replace(ctx["sasrec"], repeat_aware=aware),
                                     aware)
        ranks = target_ranks(SASRecRanker(model, data.live, name=name), data.log, data.eval_rows)
        return {"name": name, "result": metrics(ranks, data.log.is_repeat(data.eval_rows)), "ranks": ranks,
                "seconds": time.perf_counter() - t}
    cfg, static, directory = job[2], job[3], job[4]
    signals = (ctx["static_signals"] if static else ctx["signals"]) if cfg.room_loss else None
    log, live = data.log_for(static), data.live_for(static)
    res = train_generator(cfg, log, data.train_rows, directory, resume=False, live=live,
                          code_vectors=data.code_vectors, signals=signals)
    ranker = GeneratorRanker(res.model, live, cfg.generator.max_history, beam=args.beam, name=name, signals=signals)
    ranks = target_ranks(ranker, log, data.eval_rows)
    out = {"name": name, "result": metrics(ranks, log.is_repeat(data.eval_rows)), "ranks": ranks, "dir": directory,
           "steps": len(res.losses), "samples_per_s": res.samples_per_s, "train_seconds": res.seconds,
           "loss": (float(np.mean(res.losses[:20])), float(np.mean(res.losses[-20:]))), "prior_fit": res.prior_fit,
           "lp_weight": [round(w, 4) for w in res.model.lp_weight().tolist()] if cfg.generator.room_signals else None}
    if cfg.generator.room_signals:  # the same prior refit on the same held-out hours with log P(SID) at its floor
        _, held = prior_holdout(cfg, log, data.train_rows)
        with torch.no_grad():
            res.model.log_lp_scale.fill_(LOG_LP_WEIGHT_RANGE[0])
        fit_room_prior(res.model, signals, held, causal=cfg.causal_history, fit_weight=False,
                       max_entries=cfg.prior_refit_entries)
        alone = GeneratorRanker(res.model, live, cfg.generator.max_history, beam=args.beam, signals=signals)
        out["prior_ranks"] = target_ranks(alone, log, data.eval_rows)
    return out | {"seconds": time.perf_counter() - t}


def run_jobs(jobs: list[tuple], lanes: int, t0: float) -> dict[str, dict]:
    """Every job, `lanes` at a time in forked worker processes (longest first: give them in that order)."""
    done = {}
    pool = mp.get_context("fork").Pool(lanes) if lanes > 1 else None
    try:
        for r in (pool.imap_unordered(run_job, jobs, chunksize=1) if pool else map(run_job, jobs)):
            done[r["name"]] = r
            what = f"trained and evaluated {r['name']} in {r['seconds']:.0f} s"
            if "steps" in r:
                what += (f": {r['steps']} steps, {r['samples_per_s']:,.0f} samples/s, loss {r['loss'][0]:.2f} -> "
                         f"{r['loss'][1]:.2f}")
            if r.get("prior_fit"):
                what += (f"; prior refit on held-out targets: room cross-entropy {r['prior_fit'][0]:.3f} -> "
                         f"{r['prior_fit'][1]:.3f}, weights of log P(SID) by level {r['lp_weight']}")
            if "prior_ranks" in r:
                what += f"; the prior alone: HR@10 {np.mean((r['prior_ranks'] > 0) & (r['prior_ranks'] <= 10)):.3f}"
            stage(f"{what}; HR@10 {r['result']['all']['hr@10']:.3f}", t0)
    finally:
        if pool:
            pool.close()
            pool.join()
    return done


def simulated(args: argparse.Namespace, t0: float) -> dict:
    wcfg = load_config(args.world_config, WorldConfig)
    world = simulate_world(wcfg)
    split = wcfg.start_time + wcfg.days * 86400 * 2 / 3
    stage(f"world simulated: {world.events.num_rows:,} events, {world.rooms.num_rows:,} rooms", t0)
    tcfg = load_config(args.tokenizer_config, TokenizerConfig)
    tcfg = dataclasses.replace(tcfg, train_until=split, max_steps=args.tokenizer_steps or tcfg.max_steps)
    out = Path(args.out)
    tok = fit_or_load(world, tcfg, wcfg, out, lambda msg: stage(msg, t0))
    data = prepare(world, tok, split, n_eval=args.targets, seed=0)
    n_live = [len(data.live.rooms(float(t))) for t in data.log.time[data.eval_rows]]
    every = len(data.train_rows)
    if args.train_targets and args.train_targets < every:  # a seeded sample, in time order like the whole
        data.train_rows = np.sort(np.random.default_rng(1).choice(data.train_rows, args.train_targets, replace=False))
    stage(f"data: {len(data.train_rows):,} training targets (of {every:,}), {len(data.eval_rows):,} evaluation "
          f"targets, {np.mean(n_live):.0f} live rooms per request on average", t0)

    gcfg = load_config(args.config, TrainConfig)
    pcfg = load_config(args.prior_config, TrainConfig)  # identity signals, joint room softmax, refit
    if args.epochs:
        gcfg, pcfg = (dataclasses.replace(c, epochs=args.epochs) for c in (gcfg, pcfg))
    if args.refit_entries:
        pcfg = dataclasses.replace(pcfg, prior_refit_entries=args.refit_entries)
    g = gcfg.generator
    plain = dataclasses.replace(gcfg, room_loss=0.0)  # the MTP / AR pair trains alike, without the room softmax
    variants = {  # name: (train config, static SIDs, directory)
        "OneLive": (gcfg, False, "gen-onelive"),
        "OneLive, no live-room softmax (MTP)": (plain, False, "gen-no-room-softmax"),
        "OneLive, no live-room softmax, full-stack AR decoding": (
            dataclasses.replace(plain, generator=dataclasses.replace(g, decode="ar")), False, "gen-full-stack"),
    }
    if not args.quick:  # the component ablations (on validation targets: benchmarks/rec_ablation.py)
        variants |= {
            "OneLive, no time gate": (dataclasses.replace(gcfg, generator=dataclasses.replace(g, time_gate=False)),
                                      False, "gen-no-gate"),
            "OneLive, no QK norm": (dataclasses.replace(gcfg, generator=dataclasses.replace(g, qk_norm=False)), False,
                                    "gen-no-qk-norm"),
            "OneLive, static SIDs (TIGER-style)": (gcfg, True, "gen-static"),
        }
    mtp_name, ar_name = "OneLive, no live-room softmax (MTP)", "OneLive, no live-room softmax, full-stack AR decoding"
    with_prior, prior_alone = "OneLive + live-room prior", "live-room prior alone"
    aware = "SASRec, availability- and repeat-aware (LiveRec-style)"
    jobs = [("generator", with_prior, pcfg, False, out / "gen-prior")]  # the longest first
    jobs += [("generator", n, c, st, out / d) for n, (c, st, d) in variants.items()]
    jobs += [("sasrec", "SASRec (room IDs)", False), ("sasrec", aware, True)]
    lanes = max(1, min(args.jobs, len(jobs)))
    state = ViewerState.from_world(world)
    _JOB_CONTEXT.update(data=data, args=args, threads=max(1, CORES // lanes),
                        signals=prior_signals(pcfg.generator, data.log, state, data.live),
                        static_signals=prior_signals(pcfg.generator, data.static_log, state, data.static_live),
                        sasrec=live_sasrec_config(world.streamers.num_rows, g.max_history, epochs=args.sasrec_epochs))
    stage(f"{len(jobs)} models to train, {lanes} at a time with {_JOB_CONTEXT['threads']} thread(s) each", t0)
    done = run_jobs(jobs, lanes, t0)
    done[prior_alone] = {"ranks": done[with_prior]["prior_ranks"]}
    repeat = data.log.is_repeat(data.eval_rows)
    references = [PopularityRanker(data.live), RandomRanker(data.live), SimulatorRanker(world, data.live, state, "taste"),
                  SimulatorRanker(world, data.live, state, "click")]
    for ranker in references:
        done[ranker.name] = {"ranks": target_ranks(ranker, data.log, data.eval_rows)}
    stage("reference rankers evaluated", t0)
    baselines = [references[0].name, "SASRec (room IDs)", aware]
    order = [*variants, with_prior, prior_alone, *baselines, *(r.name for r in references[1:])]
    results = {n: metrics(done[n]["ranks"], repeat) for n in order}
    hits = {n: (done[n]["ranks"] > 0) & (done[n]["ranks"] <= 10) for n in order}
    best = max(baselines, key=lambda n: results[n]["all"]["hr@10"])
    models = {n: load_generator(done[n]["dir"], tok.version) for n in (mtp_name, ar_name)}
    lane_rate = {n: done[n]["samples_per_s"] for n in ("OneLive", ar_name)}

    rows = data.eval_rows[: args.speed_requests]
    mtp_rate, ar_rate = mtp_vs_ar(data, models[mtp_name], models[ar_name], rows, g.max_history, args.beam)
    stage("MTP vs AR timed", t0)
    train_rate = {n: training_rate(c, data, _JOB_CONTEXT["signals"]) for n, c in
                  (("MTP", gcfg), ("AR", variants[ar_name][0]), ("prior", pcfg))}
    stage(f"training samples/s, one process on {CORES} cores: " + ", ".join(f"{n} {r:,.0f}" for n, r in train_rate.items()), t0)

    console.print(rec_metrics_table(results, f"Next-room prediction, {len(data.eval_rows):,} targets in the held-out "
                                             f"day ({args.world_config}); candidates: rooms live at the request time "
                                             f"(~{np.mean(n_live):.0f})"))
    one, base, pop = results["OneLive"], results[best], results[references[0].name]
    prior, alone = results[with_prior], results[prior_alone]
    gain_lo, gain_hi = paired_interval(hits[with_prior], hits[prior_alone])
    gain = prior["all"]["hr@10"] - alone["all"]["hr@10"]
    mtp_change = results[mtp_name]["all"]["hr@10"] / results[ar_name]["all"]["hr@10"] - 1
    t2 = Table(title="Bars")
    for col in ("what", "bar", "measured"):
        t2.add_column(col)
    t2.add_row("OneLive alone vs popularity, HR@10", ">=", f"{one['all']['hr@10']:.3f} vs {pop['all']['hr@10']:.3f}")
    t2.add_row("OneLive alone vs the best baseline on new rooms", ">=",
               f"{one['new']['hr@10']:.3f} vs {base['new']['hr@10']:.3f} ({best}, n={one['new']['n']})")
    t2.add_row("OneLive + prior minus the prior alone (95% paired CI)", ">= 0.02, low > 0",
               f"{gain:+.4f} [{gain_lo:+.4f}, {gain_hi:+.4f}]")
    t2.add_row("OneLive + prior / best baseline", ">= 1.15", f"{prior['all']['hr@10'] / base['all']['hr@10']:.3f} "
               f"({prior['all']['hr@10']:.3f} vs {base['all']['hr@10']:.3f}, {best})")
    t2.add_row("MTP vs AR requests/s", ">= 1.3x", f"{mtp_rate:.1f} vs {ar_rate:.1f} = {mtp_rate / ar_rate:.2f}x")
    t2.add_row("MTP vs AR HR@10, relative change", ">= -2%", f"{mtp_change:+.2%}")
    t2.add_row(f"training samples/s, one process on {CORES} cores: OneLive / AR / with the prior", "",
               f"{train_rate['MTP']:,.0f} / {train_rate['AR']:,.0f} / {train_rate['prior']:,.0f}")
    t2.add_row(f"  per lane, {lanes} lanes of {_JOB_CONTEXT['threads']} thread(s) (this run's training)", "",
               f"{lane_rate['OneLive']:,.0f} / {lane_rate[ar_name]:,.0f} / {done[with_prior]['samples_per_s']:,.0f}")
    console.print(t2)
    r4 = lambda x: round(float(x), 4)  # noqa: E731
    return {
        "hr10_onelive": r4(one["all"]["hr@10"]), "hr10_popularity": r4(pop["all"]["hr@10"]),
        "hr10_best_baseline": r4(base["all"]["hr@10"]), "best_baseline": best,
        "hr10_new_onelive": r4(one["new"]["hr@10"]), "hr10_new_best_baseline": r4(base["new"]["hr@10"]),
        "hr10_onelive_prior": r4(prior["all"]["hr@10"]), "hr10_prior_alone": r4(alone["all"]["hr@10"]),
        "gain_prior": r4(gain), "gain_ci_low": r4(gain_lo), "gain_ci_high": r4(gain_hi),
        "hr10_ratio_prior": r4(prior["all"]["hr@10"] / base["all"]["hr@10"]),
        "hr10_new_onelive_prior": r4(prior["new"]["hr@10"]),
        "hr10_random": r4(results["random (live)"]["all"]["hr@10"]),
        "hr10_simulator_taste": r4(results["simulator: true taste · content"]["all"]["hr@10"]),
        "hr10_simulator_click": r4(results["simulator: true click probability"]["all"]["hr@10"]),
        "mtp_speedup": round(mtp_rate / ar_rate, 3), "mtp_requests_per_s": round(mtp_rate, 1),
        "ar_requests_per_s": round(ar_rate, 1), "mtp_hr10_rel_change": r4(mtp_change),
        "train_samples_per_s": round(train_rate["MTP"], 1), "train_samples_per_s_ar": round(train_rate["AR"], 1),
        "train_samples_per_s_prior": round(train_rate["prior"], 1), "train_lanes": lanes,
        "train_samples_per_s_per_lane": round(lane_rate["OneLive"], 1),
        "lp_weight": done[with_prior]["lp_weight"],
        "rows": {n: {k: r4(v) for k, v in r["all"].items()} | {"hr@10_new": r4(r["new"]["hr@10"]),
                                                              "hr@10_repeat": r4(r["repeat"]["hr@10"])}
                 for n, r in results.items()},
        "n_targets": int(len(data.eval_rows)), "mean_live_rooms": round(float(np.mean(n_live)), 1),
        "peak_live_rooms": int(max(len(data.live.rooms(t)) for t in np.arange(split, data.log.time.max(), 900.0))),
        "n_train_targets": int(len(data.train_rows)), "n_train_targets_all": every,
        "tokenizer_version": tok.version,
    }


def games(path: Path, args: argparse.Namespace, t0: float) -> dict:
    """SASRec under the paper's protocol on sasrec-games, and the OneLive generator beside it."""
    split = leave_one_out(read_sequences(path))
    stage(f"sasrec-games: {split_summary(split)}", t0)
    cfg = SASRecConfig(n_items=split.n_items, epochs=args.games_epochs)  # the paper's Games settings
    negatives = unseen_negatives(split.n_items, split.train)  # the paper's: items the user never had
    model, losses = train_sasrec(cfg, split.train, negatives, progress=lambda e, n, loss: stage(
        f"  SASRec epoch {e}/{n}: loss {loss:.3f}", t0) if e % 5 == 0 or e == n else None)
    sampled = evaluate_sampled(model.score, split, cfg.max_len)
    full = evaluate_full(model.score, split, cfg.max_len, limit=args.games_full_users)
    stage(f"SASRec: HR@10 {sampled['hr@10']:.4f} (published 0.7410), NDCG@10 {sampled['ndcg@10']:.4f}", t0)

    sids = item_sids(model.item.weight.detach().numpy(), RQConfig(levels=3, codebook_size=256))
    collided = len(sids) - 1 - len({tuple(s) for s in sids[1:]})
    log = sequence_log(split.train, sids, "games-sasrec-rq")
    gcfg = load_config(args.config, TrainConfig)
    gcfg = dataclasses.replace(gcfg, epochs=args.games_generator_epochs, room_loss=0.0, generator=dataclasses.replace(
        gcfg.generator, time_features=False, max_history=cfg.max_len, code_dim=0, levels=sids.shape[1],
        level_weights=None))  # no timestamps, no content, no live rooms: the 3-level SIDs of SASRec's embeddings
    res = train_generator(gcfg, log, log.examples(min_history=1), Path(args.out) / "gen-games", resume=False,
                          progress=None)
    stage(f"OneLive generator on games: {len(res.losses)} steps, {res.samples_per_s:,.0f} samples/s, "
          f"{collided} items share a SID", t0)
    score = generator_scores(res.model, sids)
    g_sampled = evaluate_sampled(score, split, cfg.max_len)
    g_full = generator_full_ranking(res.model, sids, split, cfg.max_len, limit=args.games_full_users)

    table = Table(title=f"sasrec-games, leave-one-out ({split_summary(split)})")
    for col in ("model", "HR@10 (100 neg.)", "NDCG@10 (100 neg.)", f"HR@10 full ({full['n']:,} users)", "NDCG@10 full"):
        table.add_column(col, justify="left" if col == "model" else "right")
    table.add_row("SASRec, published (Kang & McAuley 2018)", "0.7410", "0.5360", "", "")
    table.add_row("SASRec, ours", f"{sampled['hr@10']:.4f}", f"{sampled['ndcg@10']:.4f}", f"{full['hr@10']:.4f}",
                  f"{full['ndcg@10']:.4f}")
    table.add_row("OneLive generator (SIDs from SASRec item embeddings; full: beam 50)", f"{g_sampled['hr@10']:.4f}",
                  f"{g_sampled['ndcg@10']:.4f}", f"{g_full['hr@10']:.4f}", f"{g_full['ndcg@10']:.4f}")
    console.print(table)
    console.print(f"SASRec HR@10 vs published: {sampled['hr@10'] / 0.7410 - 1:+.2%} (bar: within 3%)")
    return {"hr10_sasrec_games": round(sampled["hr@10"], 4), "ndcg10_sasrec_games": round(sampled["ndcg@10"], 4),
            "hr10_sasrec_games_full": round(full["hr@10"], 4), "ndcg10_sasrec_games_full": round(full["ndcg@10"], 4),
            "hr10_onelive_games": round(g_sampled["hr@10"], 4), "ndcg10_onelive_games": round(g_sampled["ndcg@10"], 4),
            "hr10_onelive_games_full": round(g_full["hr@10"], 4), "games_sid_collisions": collided,
            "games_sasrec_vs_published": round(sampled["hr@10"] / 0.7410 - 1, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the simulated world only")
    parser.add_argument("--games-only", action="store_true", help="sasrec-games only")
    parser.add_argument("--world", choices=tuple(WORLDS), default="default",
                        help="default: configs/world/rec.yaml; large: configs/world/large.yaml (~500 rooms live at the "
                             "peak, 50,000 viewers), every key of the JSON suffixed _large")
    parser.add_argument("--world-config", default=None, help="a world config instead of --world's")
    parser.add_argument("--tokenizer-config", default="configs/rec/tokenizer.yaml")
    parser.add_argument("--config", default="configs/rec/generator.yaml")
    parser.add_argument("--prior-config", default="configs/rec/generator-prior.yaml",
                        help="OneLive with the live-room prior")
    parser.add_argument("--epochs", type=int, default=0, help="override the generator config's epochs")
    parser.add_argument("--sasrec-epochs", type=int, default=8)
    parser.add_argument("--targets", type=int, default=1500, help="held-out targets evaluated (a seeded sample)")
    parser.add_argument("--beam", type=int, default=32)
    parser.add_argument("--speed-requests", type=int, default=300)
    parser.add_argument("--games", default=None, help="sasrec-games Video.txt (default: the shared data)")
    parser.add_argument("--games-epochs", type=int, default=40, help="SASRec epochs on games")
    parser.add_argument("--games-generator-epochs", type=int, default=3)
    parser.add_argument("--games-full-users", type=int, default=5000, help="users for full ranking (a seeded sample)")
    parser.add_argument("--train-targets", type=int, default=None,
                        help="train the generators on a seeded sample of this many targets (default: all; "
                             f"--world large: {SAMPLED['large']['train_targets']:,}, with --quick "
                             f"{SAMPLED_QUICK['large']['train_targets']:,})")
    parser.add_argument("--refit-entries", type=int, default=None,
                        help="(request, live room) entries the prior's refit reads at most (default: the config's "
                             f"prior_refit_entries; --world large --quick: {SAMPLED_QUICK['large']['refit_entries']:,})")
    parser.add_argument("--tokenizer-steps", type=int, default=None,
                        help="cap the tokenizer's training steps (default: its config's; --world large: "
                             f"{SAMPLED['large']['tokenizer_steps']:,})")
    parser.add_argument("--out", default="runs/bench_rec")
    parser.add_argument("--jobs", type=int, default=CORES,
                        help="models trained at once, each in its own process with its share of the cores "
                             "(default: one per core; 1 trains them one after another in this process)")
    args = parser.parse_args()
    if args.world_config is None:
        args.world_config = WORLDS[args.world]
    if args.world == "large" and args.out == parser.get_default("out"):
        args.out = "runs/bench_rec_large"
    for key, value in ({**SAMPLED.get(args.world, {}), **(SAMPLED_QUICK.get(args.world, {}) if args.quick else {})}
                       ).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    torch.set_num_threads(CORES)
    t0 = time.perf_counter()
    out = {} if args.games_only else simulated(args, t0)
    if not args.quick and args.world != "large":  # sasrec-games is one data set whatever the world
        out |= games(Path(args.games) if args.games else shared_data_dir() / "sasrec-games" / "Video.txt",
                     args, t0)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    console.print(f"total {out['seconds']:.0f} s")
    if args.world == "large":
        out = {f"{k}_large": v for k, v in out.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
