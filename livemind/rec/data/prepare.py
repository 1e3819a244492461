"""One generator experiment end to end: tokenised watch logs, a time split, training with a loss
curve, and every ranker on the same held-out targets. Shared by `livemind rec train`, the demo
and `benchmarks/rec_quality.py`, so all three measure the same thing.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livemind.errors import DataError
from livemind.rec.data import WatchLog, segment_codes, static_codes
from livemind.rec.evaluate import LiveRooms
from livemind.rec.generator import OneLiveGenerator
from livemind.rec.room_signals import RoomSignals
from livemind.rec.segments import SegmentFrame
from livemind.rec.tokenizer import DynamicTokenizer
from livemind.rec.train import GeneratorTrainer, TrainConfig, fit_room_prior
from livemind.world.tables import WorldData


@dataclass
class RecData:
    """A world tokenised once, split in time: train on targets before `split`, evaluate after."""

    world: WorldData
    frame: SegmentFrame
    codes: np.ndarray  # (segments, L) dynamic SID of every segment
    log: WatchLog  # dynamic SIDs at watch time
    static_log: WatchLog  # TIGER-style: a room keeps its first segment's SID
    live: LiveRooms
    static_live: LiveRooms
    split: float
    train_rows: np.ndarray
    eval_rows: np.ndarray
    code_vectors: np.ndarray | None = None  # the tokenizer's codebook centroids (L, K, D): semantic codes

    def log_for(self, static: bool) -> WatchLog:
        return self.static_log if static else self.log

    def live_for(self, static: bool) -> LiveRooms:
        return self.static_live if static else self.live


def tokenise(world: WorldData, tok: DynamicTokenizer) -> tuple[SegmentFrame, np.ndarray, WatchLog, LiveRooms]:
    """Every segment's dynamic SID (segments, L), the watch log carrying them, and the live rooms."""
    frame = SegmentFrame.from_world(world)
    codes = segment_codes(tok, frame)
    return (frame, codes, WatchLog.from_world(world, tok, codes=codes, frame=frame),
            LiveRooms(world, frame, codes, tok.version))


def prepare(world: WorldData, tok: DynamicTokenizer, split: float, n_eval: int | None = None,
            seed: int = 0) -> RecData:
    """Tokenise every segment, build the watch logs and pick the targets (a seeded sample of n_eval)."""
    frame, codes, log, live = tokenise(world, tok)
    static_log = WatchLog.from_world(world, tok, static=True, codes=codes, frame=frame)
    train_rows = log.examples(end=split, min_history=1)
    eval_rows = log.examples(start=split)
    if not len(train_rows):
        raise DataError(f"no watch has an earlier watch before the split time {split:.0f}")
    if not len(eval_rows):
        raise DataError(f"no watch after the split time {split:.0f} to evaluate on")
    if n_eval is not None and n_eval < len(eval_rows):
        eval_rows = np.sort(np.random.default_rng(seed).choice(eval_rows, n_eval, replace=False))
    return RecData(world, frame, codes, log, static_log, live,
                   LiveRooms(world, frame, static_codes(frame, codes), tok.version), split, train_rows, eval_rows,
                   tok.quantizer.centroids)


@dataclass
class TrainResult:
    model: OneLiveGenerator
    losses: list[float]
    seconds: float  # wall time of the steps run in this call
    samples: int  # training examples processed in this call
    prior_fit: tuple[float, float] | None = None  # held-out room cross-entropy before / after refitting the prior

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("nan")


def train_generator(cfg: TrainConfig, log: WatchLog, rows: np.ndarray, out: str | Path, resume: bool = True,
                    progress: Callable[[int, int], None] | None = None, live: LiveRooms | None = None,
                    code_vectors: np.ndarray | None = None, signals: RoomSignals | None = None) -> TrainResult:
    """Train (or resume) into `out`; writes the checkpoint, `losses.csv` and `loss.png` there.

    `code_vectors`: the tokenizer's codebook centroids (L, K, D), needed when the generator reads
    semantic codes (`code_dim` > 0). `signals`: the live rooms' identity signals, needed with a
    live-room prior (`room_loss` > 0). With one, the targets of the last `prior_holdout_hours` of
    `rows` are held out of training, and the prior is refit on them once training ends
    (`fit_room_prior`), then saved with the checkpoint; resuming a finished, refit checkpoint
    neither trains nor refits again.
    """
    held = np.zeros(0, dtype=np.int64)
    if cfg.room_loss and cfg.prior_holdout_hours:
        rows = np.asarray(rows)
        late = log.time[rows] >= log.time[rows].max() - cfg.prior_holdout_hours * 3600.0
        rows, held = rows[~late], rows[late]
    trainer = GeneratorTrainer(cfg, log, rows, out, live, code_vectors, signals)
    trainer.setup(resume=resume)
    before = trainer.global_step
    t0 = time.perf_counter()
    try:
        losses = trainer.train(progress=progress)
    finally:
        trainer.cleanup()
    seconds = time.perf_counter() - t0
    if trainer.global_step != before:
        trainer.prior_fit = None  # trained further: the refit is stale
    if len(held) and trainer.rank == 0 and trainer.prior_fit is None:
        trainer.prior_fit = fit_room_prior(trainer.model, signals, held)
        trainer.save_checkpoint()
    if trainer.rank == 0:
        write_loss_curve(Path(out), losses, title=f"generator ({cfg.generator.decode}) training loss",
                         ylabel="SID + live-room cross-entropy" if cfg.room_loss else "weighted SID cross-entropy")
    return TrainResult(trainer.model.eval(), losses, seconds, (trainer.global_step - before) * cfg.batch_size,
                       trainer.prior_fit)


def write_loss_curve(out: Path, losses: list[float], title: str, smooth: int = 20,
                     ylabel: str = "weighted SID cross-entropy") -> None:
    """`losses.csv` (step, loss) and `loss.png` (raw and a running mean) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "losses.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss"])
        w.writerows((i + 1, f"{v:.6f}") for i, v in enumerate(losses))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, alpha=0.35, label="loss")
    if len(losses) >= smooth:
        ax.plot(steps[smooth - 1:], np.convolve(losses, np.ones(smooth) / smooth, mode="valid"),
                label=f"mean of {smooth}")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=110)
    plt.close(fig)
