"""Rich renderings shared by the CLI and the demo."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from livemind.world.stats import WorldStats

_BARS = " ▁▂▃▄▅▆▇█"


@contextmanager
def figure(path: str | Path, ncols: int = 1, size: tuple[float, float] = (6, 3.5), nrows: int = 1,
           **kw: Any) -> Iterator[tuple[Any, Any]]:
    """(figure, axes) of an `nrows` x `ncols` grid of plots, saved as a PNG at `path` (folders made) on exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=size, **kw)
    try:
        yield fig, axes
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def _when(t: float) -> str:
    if t > 1e8:  # a real timestamp
        return datetime.fromtimestamp(t, UTC).strftime("%a %H:%M")
    return f"{t:g}"


def render_stats(stats: WorldStats, console: Console, title: str = "world") -> None:
    counts = Table(title=f"{title}: tables", show_header=True)
    counts.add_column("table")
    counts.add_column("rows", justify="right")
    for name, n in stats.tables.items():
        counts.add_row(name, f"{n:,}")
    kinds = Table(title="events by kind", show_header=True)
    kinds.add_column("kind")
    kinds.add_column("count", justify="right")
    for k, n in stats.events_by_kind.items():
        kinds.add_row(k, f"{n:,}")
    console.print(counts, kinds)
    summary = Table(title="behaviour and content", show_header=False)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_row("click-through rate (clicks / impressions)", _fmt(stats.ctr))
    summary.add_row("repeat consumption (watches of a streamer seen before)", _fmt(stats.repeat_ratio))
    summary.add_row("content change rate (product/topic differs from previous segment)", _fmt(stats.content_change_rate))
    summary.add_row("text change rate (segment text differs from previous)", _fmt(stats.text_change_rate))
    if stats.questions_by_kind:
        summary.add_row("questions", ", ".join(f"{k} {n}" for k, n in stats.questions_by_kind.items()))
    console.print(summary)
    if stats.live_over_time:
        peak = max(n for _, n in stats.live_over_time) or 1
        bars = "".join(_BARS[round(n / peak * (len(_BARS) - 1))] for _, n in stats.live_over_time)
        first, last = stats.live_over_time[0][0], stats.live_over_time[-1][0]
        console.print(f"rooms live over time ({_when(first)} .. {_when(last)}, peak {peak}): [bold]{bars}[/bold]")


def rec_metrics_table(results: dict[str, dict[str, dict[str, float]]], title: str) -> Table:
    """One row per ranker from `livemind.rec.eval.offline.evaluate` results ({name: {split: {metric: v}}})."""
    table = Table(title=title)
    cols = ("HR@1", "HR@5", "HR@10", "NDCG@10", "MRR", "HR@10 new", "HR@10 repeat")
    table.add_column("model")
    for col in cols:
        table.add_column(col, justify="right")
    for name, r in results.items():
        a = r["all"]
        table.add_row(name, *(f"{a[k]:.3f}" for k in ("hr@1", "hr@5", "hr@10", "ndcg@10", "mrr")),
                      f"{r['new']['hr@10']:.3f}", f"{r['repeat']['hr@10']:.3f}")
    return table


def calibration_table(rows: dict[str, dict[str, float]], title: str) -> Table:
    """Reward-model calibration per head (`livemind.rec.alignment.reward_model.calibration(...).rows`)."""
    table = Table(title=title)
    for col in ("head", "n", "mean predicted", "mean observed", "ECE"):
        table.add_column(col, justify="left" if col == "head" else "right")
    for name, r in rows.items():
        table.add_row(name, f"{r['n']:,}", f"{r['predicted']:.4f}", f"{r['observed']:.4f}",
                      "" if r["ece"] != r["ece"] else f"{r['ece']:.4f}")
    return table
