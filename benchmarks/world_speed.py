"""Simulator speed: events generated per second (the bar: 1,000,000 events in under 60 s).

Run: python benchmarks/world_speed.py [--config configs/world/million.yaml] [--repeats 3]
Prints a table and, as its last line, a JSON object with events, seconds, events_per_s.
"""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.table import Table

from livemind.config import load_config
from livemind.world.simulator import LiveWorld, WorldConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/world/million.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = load_config(args.config, WorldConfig)
    table = Table(title=f"simulator speed ({args.config})")
    for col in ("run", "build s", "simulate s", "total s", "events", "events/s"):
        table.add_column(col, justify="right")
    best = None
    for i in range(args.repeats):
        t0 = time.perf_counter()
        world = LiveWorld(cfg)
        t1 = time.perf_counter()
        data = world.simulate()
        t2 = time.perf_counter()
        n = data.events.num_rows
        row = {"events": n, "seconds": round(t2 - t0, 3), "events_per_s": round(n / (t2 - t0))}
        table.add_row(str(i + 1), f"{t1 - t0:.2f}", f"{t2 - t1:.2f}", f"{t2 - t0:.2f}", f"{n:,}", f"{row['events_per_s']:,}")
        if best is None or row["seconds"] < best["seconds"]:
            best = row
    Console().print(table)
    print(json.dumps({**best, "bar_events_per_s": 16700, "meets_bar": best["events_per_s"] >= 16700}))


if __name__ == "__main__":
    main()
