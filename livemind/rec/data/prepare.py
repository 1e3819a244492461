"""One generator experiment end to end: tokenised watch logs, a time split, training with a loss
curve, and every ranker on the same held-out targets. Shared by `livemind rec train`, the demo
and `benchmarks/rec_quality.py`, so all three measure the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from livemind.errors import DataError
from livemind.rec.data.segments import SegmentFrame
from livemind.rec.data.watch import WatchLog, segment_codes, static_codes
from livemind.rec.live.rooms import LiveRooms
from livemind.world.tables import WorldData

if TYPE_CHECKING:  # any tokenizer with .encoder, .encode_vectors and .version will do
    from livemind.rec.tokenizer.dynamic import DynamicTokenizer


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
                   tok.code_vectors)
