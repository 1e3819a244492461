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
