"""`livemind demo`: every capability built so far, on a small simulated world, in a few minutes.

Each part caches what it builds under the output directory, so a second run is quicker.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from livemind.world.simulator import WorldConfig, simulate_world
from livemind.world.stats import world_stats
from livemind.world.tables import WorldData

# Mirrors configs/world/small.yaml (a test keeps them equal).
DEMO_WORLD = WorldConfig(seed=7, n_viewers=1500, n_streamers=120, days=2.0)


def demo_world(out: Path, console: Console) -> WorldData:
    world_dir = out / "world"
    if (world_dir / "events.parquet").is_file():
        console.print(f"world: cached at {world_dir}")
        return WorldData.load(world_dir)
    from livemind.cli import progress_bar

    start = time.perf_counter()
    with progress_bar("simulating the demo world") as bar:
        task = bar.add_task("simulate", total=None)
        world = simulate_world(DEMO_WORLD, progress=lambda i, n: bar.update(task, completed=i, total=n))
    world.save(world_dir)
    console.print(f"world: simulated in {time.perf_counter() - start:.1f} s, saved to {world_dir}")
    return world


def run_demo(out: Path, console: Console) -> None:
    from livemind.report import render_stats

    out.mkdir(parents=True, exist_ok=True)
    console.print(Rule("1. the live world"))
    world = demo_world(out, console)
    render_stats(world_stats(world), console, title="demo world")
    q = world.questions.slice(0, 3).to_pylist()
    for row in q:
        console.print(f"  viewer {row['viewer']} asks in room {row['room']}: [italic]{row['text']}[/italic] "
                      f"-> gold {row['gold']}")
