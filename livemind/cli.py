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
