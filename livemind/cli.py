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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from livemind.errors import LivemindError

app = typer.Typer(help="livemind: real-time AI for live-stream commerce.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
world_app = typer.Typer(help="The simulated live world and public datasets.", no_args_is_help=True)
app.add_typer(world_app, name="world")
rec_app = typer.Typer(help="OneLive: generative recommendation of live rooms.", no_args_is_help=True)
tokenizer_app = typer.Typer(help="The dynamic tokenizer: segments -> semantic IDs.", no_args_is_help=True)
rec_app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(rec_app, name="rec")
console = Console(soft_wrap=True)
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
    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


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


class StageProgress:
    """A rich progress bar with one task per named stage, for `(stage, done, total)` callbacks."""

    def __init__(self, bar: Progress) -> None:
        self.bar, self.tasks = bar, {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done, total=total)


@tokenizer_app.command("fit")
@friendly
def tokenizer_fit(
    world: Annotated[Path, typer.Option(help="a world directory (livemind world simulate)")],
    out: Annotated[Path, typer.Option(help="directory for the versioned tokenizer")],
    config: Annotated[Path | None, typer.Option(help="YAML tokenizer config, e.g. configs/rec/tokenizer.yaml")] = None,
    train_until: Annotated[float | None, typer.Option(help="Unix time; later events and segments are held out")] = None,
    cache: Annotated[Path, typer.Option(help="embedding cache directory")] = Path("runs/cache/embeddings"),
) -> None:
    """Train the room tower and fit the residual k-means codebooks on a world's log."""
    import dataclasses

    from livemind.config import load_config
    from livemind.rec.tokenizer_fit import TokenizerConfig, fit_tokenizer
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
    tokenizer: Annotated[Path, typer.Option(help="a tokenizer directory (livemind rec tokenizer fit)")],
    start: Annotated[float | None, typer.Option(help="replay from this Unix time (default: the tokenizer's train_until)")] = None,
    out: Annotated[Path | None, typer.Option(help="where to write the PNG report (default: inside the tokenizer directory)")] = None,
    cache: Annotated[Path, typer.Option(help="embedding cache directory")] = Path("runs/cache/embeddings"),
) -> None:
    """Replay a world through the tokenizer: utilisation, collisions, reconstruction, churn, with a plot."""
    import json

    from rich.table import Table

    from livemind.rec.tokenizer import DynamicTokenizer
    from livemind.rec.tokenizer_report import evaluate_tokenizer, plot_report
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
    from livemind.rec.pipeline import prepare
    from livemind.rec.tokenizer import DynamicTokenizer
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
    world: Annotated[Path, typer.Option(help="a world directory (livemind world simulate)")],
    tokenizer: Annotated[Path, typer.Option(help="a tokenizer directory (livemind rec tokenizer fit)")],
    out: Annotated[Path, typer.Option(help="checkpoint directory; an existing checkpoint is resumed exactly")],
    config: Annotated[Path | None, typer.Option(help="YAML training config, e.g. configs/rec/generator.yaml")] = None,
    split: Annotated[float | None, typer.Option(help="Unix time: train on targets before, evaluate after "
                                                     "(default: the tokenizer's train_until)")] = None,
    static: Annotated[bool, typer.Option(help="TIGER-style ablation: each room keeps its first SID")] = False,
    resume: Annotated[bool, typer.Option(help="continue from a checkpoint in --out")] = True,
    eval_targets: Annotated[int, typer.Option(help="held-out targets to evaluate after training (0: none)")] = 500,
    cache: Annotated[Path, typer.Option(help="embedding cache directory")] = Path("runs/cache/embeddings"),
) -> None:
    """Train the OneLive generator (CPU, or under torchrun with DDP); writes losses.csv and loss.png."""
    import os

    from livemind.config import load_config
    from livemind.rec.evaluate import GeneratorRanker, PopularityRanker, evaluate
    from livemind.rec.pipeline import train_generator
    from livemind.rec.train import TrainConfig

    cfg = load_config(config, TrainConfig) if config else TrainConfig()
    data = _rec_data(world, tokenizer, split, cache, eval_targets or None)
    main = int(os.environ.get("RANK", "0")) == 0
    with progress_bar("training") as bar:
        task = bar.add_task("train", total=None)
        res = train_generator(cfg, data.log_for(static), data.train_rows, out, resume=resume,
                              progress=lambda d, n: bar.update(task, completed=d, total=n) if main else None,
                              live=data.live_for(static))
    if not main:
        return
    console.print(f"{len(res.losses):,} steps, loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}; "
                  f"{res.samples_per_s:,.0f} samples/s this run; checkpoint, losses.csv and loss.png in {out}")
    if eval_targets:
        from livemind.report import rec_metrics_table

        results = {r.name: evaluate(r, data.log_for(static), data.eval_rows)
                   for r in (GeneratorRanker(res.model, data.live_for(static), cfg.generator.max_history),
                             PopularityRanker(data.live_for(static)))}
        console.print(rec_metrics_table(results, f"{len(data.eval_rows):,} held-out targets after {data.split:.0f}; "
                                                 "candidates: live rooms"))


@rec_app.command("recommend")
@friendly
def rec_recommend(
    world: Annotated[Path, typer.Option(help="a world directory")],
    tokenizer: Annotated[Path, typer.Option(help="a tokenizer directory")],
    generator: Annotated[Path, typer.Option(help="a generator checkpoint directory (livemind rec train)")],
    viewer: Annotated[int, typer.Option(help="viewer id")],
    time: Annotated[float, typer.Option(help="request time, Unix seconds")],
    top_k: Annotated[int, typer.Option(help="rooms to return")] = 10,
    beam: Annotated[int, typer.Option(help="beam width")] = 32,
    cache: Annotated[Path, typer.Option(help="embedding cache directory")] = Path("runs/cache/embeddings"),
) -> None:
    """Top-k live rooms for a viewer at a time, from their watches before that time."""
    import numpy as np

    from livemind.errors import DataError
    from livemind.rec.beam import recommend
    from livemind.rec.pipeline import tokenise
    from livemind.rec.tokenizer import DynamicTokenizer
    from livemind.rec.train import load_generator
    from livemind.world.tables import WorldData

    if top_k < 1 or beam < 1:
        raise DataError(f"--top-k and --beam must be at least 1, got {top_k} and {beam}")
    tok = DynamicTokenizer.load(tokenizer, cache_dir=cache)
    model = load_generator(generator, tok.version)
    data = WorldData.load(world)
    if viewer not in set(data.viewers.column("id").to_numpy().tolist()):
        raise DataError(f"viewer {viewer} is not in {world}")
    _, _, log, live = tokenise(data, tok)
    hist = log.history_at(viewer, time, model.cfg.max_history)
    snap = live.snapshot(time)
    recs = recommend(model, hist, snap, top_k, beam)
    n_hist = int(hist.valid.sum())
    if not recs:
        console.print(f"no room is live at {time:.0f}: nothing to recommend")
        return
    streamers = live.streamer_of(np.array([r for r, _ in recs]))
    console.print(f"viewer {viewer} at {time:.0f}: {n_hist} earlier watches, {len(snap.rooms)} rooms live")
    for (room, score), s in zip(recs, streamers):
        console.print(f"  room {room:>6} (streamer {s:>4})  SID {'-'.join(map(str, snap.codes[np.searchsorted(snap.rooms, room)]))}"
                      f"  log p {score:.2f}")


@app.command()
@friendly
def demo(
    out: Annotated[Path, typer.Option(help="working directory; what the demo trains is cached here")] = Path("runs/demo"),
) -> None:
    """Show every capability built so far on a small simulated world."""
    from livemind.demo import run_demo

    run_demo(out, console)


if __name__ == "__main__":
    app()
