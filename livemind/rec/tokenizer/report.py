"""How good are the semantic IDs? Replays a time window through the tokenizer online and measures:

- utilisation per level: share of the K codes used, and the perplexity exp(H) of code usage;
- collision rate: share of live rooms whose full SID another live room carries too (sampled every
  `snapshot_every` seconds);
- reconstruction error: relative squared error of the quantised room vectors after each level;
- churn: over consecutive segments of a room, how often the level-1 code changes when the content
  category changed (it should), and how often it stays when the content did not change (same
  product, or chat followed by chat) (it should);
- update latency of the embedding-free path (`update_vectors` + `LiveIndex` refresh), per segment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from livemind.rec.data.segments import SegmentFrame
from livemind.rec.tokenizer.dynamic import DynamicTokenizer
from livemind.report import figure
from livemind.world.tables import WorldData


@dataclass
class TokenizerReport:
    version: str
    window: tuple[float, float]
    n_segments: int
    utilisation: list[float]  # per level
    perplexity: list[float]  # per level
    collision_rate: float
    reconstruction_error: list[float]  # per level, cumulative
    churn_changed: float  # P(L1 changes | category changed)
    stable_unchanged: float  # P(L1 kept | content unchanged)
    churn_other_product: float  # P(L1 changes | other product, same category)
    n_changed: int
    n_unchanged: int
    update_p50_ms: float
    update_p99_ms: float
    update_ms: list[float] = field(default_factory=list, repr=False)
    timelines: dict[int, list[tuple[float, str, tuple[int, ...]]]] = field(default_factory=dict, repr=False)
    level1_counts: list[list[int]] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        d = asdict(self)
        for k in ("update_ms", "timelines", "level1_counts"):
            d.pop(k)
        return d


def code_usage(codes: np.ndarray, K: int) -> tuple[list[float], list[float], list[list[int]]]:
    """Per level of codes (N, L): the share of the K codes used, the perplexity of their use, and
    (level 1 only) the codes' counts, largest first."""
    util, ppl, counts_l1 = [], [], []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=K)
        p = counts[counts > 0] / counts.sum()
        util.append(float((counts > 0).sum() / K))
        ppl.append(float(np.exp(-(p * np.log(p)).sum())))
        if level == 0:
            counts_l1 = [sorted(counts.tolist(), reverse=True)]
    return util, ppl, counts_l1


def evaluate_tokenizer(tok: DynamicTokenizer, world: WorldData, start: float | None = None, end: float | None = None,
                       snapshot_every: float = 600.0, timeline_rooms: int = 4,
                       progress: Callable[[int, int], None] | None = None) -> TokenizerReport:
    tok.reset()
    frame = SegmentFrame.from_world(world)
    start = float(frame.start_time.min()) if start is None else start
    end = float(frame.start_time.max()) + 1 if end is None else end
    rows = np.flatnonzero((frame.start_time >= start) & (frame.start_time < end))
    rows = rows[np.argsort(frame.start_time[rows], kind="stable")]
    x30 = tok.encoder.encode([frame.text[i] for i in rows])  # one batched call; the replay reuses it
    room_pos = {int(r): i for i, r in enumerate(frame.room_ids)}

    codes = np.zeros((len(rows), tok.levels), dtype=np.int64)
    vectors = np.zeros((len(rows), tok.tower.cfg.out_dim), dtype=np.float32)
    latencies: list[float] = []
    collisions: list[float] = []
    live_end: dict[int, float] = {}
    next_snapshot = start + snapshot_every
    for n, (i, x) in enumerate(zip(rows, x30)):
        t = frame.start_time[i]
        for room in [r for r, e in live_end.items() if e <= t]:
            tok.end_room(room)
            del live_end[room]
        while t >= next_snapshot:
            if len(tok.index):
                collisions.append(tok.index.snapshot().collision_rate())
            next_snapshot += snapshot_every
        room = int(frame.room[i])
        if room not in live_end:
            tok.start_room(room, int(frame.streamer[i]))
            live_end[room] = float(frame.room_end[room_pos[room]])
        t0 = time.perf_counter()
        sid = tok.update_vectors([room], [int(frame.index[i])], x[None, :], [str(frame.topic[i])])[0]
        latencies.append((time.perf_counter() - t0) * 1000)
        codes[n] = sid
        vectors[n] = tok.room_vector(room)
        if progress and n % 500 == 0:
            progress(n, len(rows))
    for room in list(live_end):
        tok.end_room(room)
    if progress:
        progress(len(rows), len(rows))

    content = codes[:, tok.content_levels]  # the residual codes (a layout adds topic and streamer levels)
    util, ppl, counts_l1 = code_usage(content, tok.codebook_size)

    # consecutive segments of the same room, in replay order
    order = np.lexsort((frame.index[rows], frame.room[rows]))
    r_sorted, c_sorted = frame.room[rows][order], content[order, 0]
    topic, product = frame.topic[rows][order], frame.product[rows][order]
    pair = (r_sorted[1:] == r_sorted[:-1]) & (frame.index[rows][order][1:] == frame.index[rows][order][:-1] + 1)
    changed_l1 = c_sorted[1:] != c_sorted[:-1]
    cat_changed = pair & (topic[1:] != topic[:-1])
    unchanged = pair & (topic[1:] == topic[:-1]) & (product[1:] == product[:-1])
    other_product = pair & (topic[1:] == topic[:-1]) & (product[1:] != product[:-1])

    timelines: dict[int, list[tuple[float, str, tuple[int, ...]]]] = {}
    busiest = np.argsort(-np.bincount(np.searchsorted(frame.room_ids, frame.room[rows])))[:timeline_rooms]
    for pos in busiest:
        room = int(frame.room_ids[pos])
        sel = np.flatnonzero(frame.room[rows] == room)
        timelines[room] = [(float(frame.start_time[rows[j]]), str(frame.topic[rows[j]]), tuple(codes[j].tolist())) for j in sel]

    lat = np.array(latencies) if latencies else np.zeros(1)
    return TokenizerReport(
        version=tok.version, window=(start, end), n_segments=len(rows), utilisation=util, perplexity=ppl,
        collision_rate=float(np.mean(collisions)) if collisions else 0.0,
        reconstruction_error=tok.quantizer.reconstruction_error(vectors) if len(vectors) else [],
        churn_changed=float(changed_l1[cat_changed].mean()) if cat_changed.any() else float("nan"),
        stable_unchanged=float((~changed_l1[unchanged]).mean()) if unchanged.any() else float("nan"),
        churn_other_product=float(changed_l1[other_product].mean()) if other_product.any() else float("nan"),
        n_changed=int(cat_changed.sum()), n_unchanged=int(unchanged.sum()),
        update_p50_ms=float(np.percentile(lat, 50)), update_p99_ms=float(np.percentile(lat, 99)),
        update_ms=latencies, timelines=timelines, level1_counts=counts_l1,
    )


def plot_report(report: TokenizerReport, path: str | Path, losses: list[float] | None = None) -> Path:
    with figure(path, 2, (12, 8), nrows=2) as (fig, ax):
        _plot_panels(fig, ax, report)
    path = Path(path)
    if losses:
        with figure(path.with_name(path.stem + "_loss.png")) as (_, a):
            a.plot(losses, lw=0.8)
            a.set(title="room tower training loss (in-batch softmax)", xlabel="step", ylabel="loss")
    return path


def _plot_panels(fig, ax, report: TokenizerReport) -> None:
    import matplotlib.pyplot as plt

    if report.level1_counts:
        ax[0, 0].bar(range(len(report.level1_counts[0])), report.level1_counts[0], width=1.0)
    ax[0, 0].set(title=f"level-1 code usage, sorted (utilisation {report.utilisation[0]:.0%}, "
                       f"perplexity {report.perplexity[0]:.0f})", xlabel="code rank", ylabel="segments")
    ax[0, 1].plot(range(1, len(report.reconstruction_error) + 1), report.reconstruction_error, marker="o")
    ax[0, 1].set(title="relative reconstruction error after each level", xlabel="level", ylabel="error", ylim=(0, None),
                 xticks=range(1, len(report.reconstruction_error) + 1))
    bars = {"category changed:\nL1 changed": report.churn_changed, "content unchanged:\nL1 kept": report.stable_unchanged,
            "other product, same\ncategory: L1 changed": report.churn_other_product}
    ax[1, 0].bar(list(bars), list(bars.values()), color=["tab:orange", "tab:green", "tab:gray"])
    ax[1, 0].axhline(0.8, ls="--", c="k", lw=1)
    ax[1, 0].set(title="SID churn over consecutive segments", ylim=(0, 1))
    topics = sorted({tp for tl in report.timelines.values() for _, tp, _ in tl})
    colours = {tp: plt.cm.tab10(i % 10) for i, tp in enumerate(topics)}
    for k, tl in enumerate(report.timelines.values()):
        t0 = tl[0][0]
        ax[1, 1].scatter([(t - t0) / 60 for t, _, _ in tl], [k] * len(tl), c=[colours[tp] for _, tp, _ in tl], s=6, marker="|")
        l1 = [s[0] for _, _, s in tl]
        changes = [(tl[j][0] - t0) / 60 for j in range(1, len(tl)) if l1[j] != l1[j - 1]]
        ax[1, 1].scatter(changes, [k + 0.3] * len(changes), c="k", s=8, marker="v")
    ax[1, 1].set(title="rooms over time: colour = topic, ▼ = level-1 code changed", xlabel="minutes since room start",
                 yticks=range(len(report.timelines)), yticklabels=[f"room {r}" for r in report.timelines])
    handles = [plt.Line2D([], [], marker="s", ls="", color=colours[tp], label=tp) for tp in topics]
    ax[1, 1].legend(handles=handles, fontsize=7, loc="upper right", ncol=2)
    fig.suptitle(f"tokenizer {report.version}: {report.n_segments:,} segments, collision rate {report.collision_rate:.1%}")
