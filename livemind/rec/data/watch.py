"""Training and evaluation data for the generator: viewers' watch sequences as SID tokens.

Every watch event is a token carrying the SID the room had *when the viewer watched it* (the
segment on screen at that moment, tokenised by the dynamic tokenizer). An example is "the
viewer's previous watches -> the SID of the room they watched next, at that time". Examples are
split by the time of their target: the model trains on targets before `split` and is evaluated
on the later window, where rooms live at the request time are the candidates.

`static=True` gives the TIGER-style ablation: each room keeps the SID of its first segment for
its whole life.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from livemind.errors import DataError
from livemind.rec.data.segments import SegmentFrame
from livemind.world.schema import EVENT_KINDS
from livemind.world.tables import WorldData

if TYPE_CHECKING:  # any tokenizer with .encoder, .encode_vectors and .version will do
    from livemind.rec.tokenizer.dynamic import DynamicTokenizer

WATCH = EVENT_KINDS.index("watch")


def segment_codes(tok: DynamicTokenizer, frame: SegmentFrame) -> np.ndarray:
    """SID of every segment, (N, L), from its content and its room's history (offline, no state)."""
    x30 = tok.encoder.encode(frame.text)
    _, codes = tok.encode_vectors(x30, frame.pooled(x30), frame.streamer, frame.topic.astype(str))
    return codes


def static_codes(frame: SegmentFrame, codes: np.ndarray) -> np.ndarray:
    """TIGER-style: every segment of a room gets the SID of the room's first segment."""
    return codes[np.repeat(frame.room_offset, frame.room_count)]


@dataclass
class History:
    """A batch of viewer histories, left-padded to T tokens.

    codes: (B, T, L) int64 SIDs at watch time; kind: (B, T) int64; watch: (B, T) float seconds;
    time: (B, T) float64 Unix seconds; valid: (B, T) bool (False = padding); now: (B,) float64 request time.
    """

    codes: Tensor
    kind: Tensor
    watch: Tensor
    time: Tensor
    valid: Tensor
    now: Tensor

    @classmethod
    def one(cls, sid: np.ndarray, watch: np.ndarray, time: np.ndarray, now: float) -> History:
        """One request's history from its watches, oldest first: sid (T, L), watch seconds (T,), time
        (T,); T = 0 is a cold start. The offline log and the live state both build histories here."""
        T, L = sid.shape
        return cls(
            codes=torch.from_numpy(np.ascontiguousarray(sid, dtype=np.int64).reshape(1, T, L)),
            kind=torch.full((1, T), WATCH, dtype=torch.long, device="cpu"),
            watch=torch.from_numpy(np.asarray(watch, dtype=np.float64)[None]).float(),
            time=torch.from_numpy(np.asarray(time, dtype=np.float64)[None]),
            valid=torch.ones(1, T, dtype=torch.bool, device="cpu"),
            now=torch.tensor([now], dtype=torch.float64, device="cpu"),
        )

    @classmethod
    def stack(cls, hists: list[History]) -> History:
        """Several histories as one batch, left-padded to the longest (padding: valid False)."""
        T = max(h.codes.shape[1] for h in hists)

        def pad(t: Tensor, value: float | bool) -> Tensor:
            n = T - t.shape[1]
            if n == 0:
                return t
            filler = torch.full((t.shape[0], n, *t.shape[2:]), value, dtype=t.dtype, device=t.device)
            return torch.cat([filler, t], dim=1)

        return cls(codes=torch.cat([pad(h.codes, 0) for h in hists]), kind=torch.cat([pad(h.kind, WATCH) for h in hists]),
                   watch=torch.cat([pad(h.watch, 0.0) for h in hists]),
                   time=torch.cat([pad(h.time, float(h.now[0])) for h in hists]),
                   valid=torch.cat([pad(h.valid, False) for h in hists]), now=torch.cat([h.now for h in hists]))

    def to(self, device: torch.device | str) -> History:
        """The same histories on `device` (self when they are there already)."""
        if self.codes.device == torch.device(device):
            return self
        return History(*(t.to(device) for t in (self.codes, self.kind, self.watch, self.time, self.valid, self.now)))


@dataclass
class WatchLog:
    """Watch tokens sorted by (viewer, time). Arrays are (N,) unless noted."""

    viewer: np.ndarray
    room: np.ndarray
    streamer: np.ndarray
    time: np.ndarray
    watch: np.ndarray  # seconds
    sid: np.ndarray  # (N, L) SID at watch time
    first: np.ndarray  # row of the viewer's first token
    tokenizer_version: str
    topic: np.ndarray | None = None  # (N,) topic id (SegmentFrame.topic_ids) of the segment watched; None: unknown
    _before: np.ndarray | None = field(default=None, init=False, repr=False)  # see before()

    @classmethod
    def from_world(cls, world: WorldData, tok: DynamicTokenizer, static: bool = False,
                   codes: np.ndarray | None = None, frame: SegmentFrame | None = None) -> WatchLog:
        """`codes` and `frame`, when the caller has them already, spare re-tokenising the world."""
        frame = SegmentFrame.from_world(world) if frame is None else frame
        codes = segment_codes(tok, frame) if codes is None else codes
        if static:
            codes = static_codes(frame, codes)
        ev = world.event_batch()
        ev = ev.take(np.flatnonzero(ev.kind == WATCH))
        seg = frame.lookup(ev.room, ev.time)
        ev = ev.take(np.flatnonzero(seg >= 0))
        seg = seg[seg >= 0]
        order = np.lexsort((ev.time, ev.viewer))
        ev, seg = ev.take(order), seg[order]
        if not len(ev):
            raise DataError("the world has no watch events on rooms with segments")
        starts = np.r_[0, np.flatnonzero(np.diff(ev.viewer)) + 1]
        first = np.repeat(starts, np.diff(np.r_[starts, len(ev)]))
        return cls(ev.viewer, ev.room, frame.streamer[seg], ev.time, ev.value, codes[seg], first, tok.version,
                   frame.topic_ids()[seg])

    def __len__(self) -> int:
        return len(self.viewer)

    def examples(self, start: float | None = None, end: float | None = None, min_history: int = 0) -> np.ndarray:
        """Rows usable as targets: time in [start, end) and at least `min_history` earlier tokens."""
        keep = (np.arange(len(self)) - self.first) >= min_history
        if start is not None:
            keep &= self.time >= start
        if end is not None:
            keep &= self.time < end
        return np.flatnonzero(keep)

    def before(self, rows: np.ndarray) -> np.ndarray:
        """For each row, the first row of its viewer at the same instant: the watches before it are
        all the viewer did strictly before the row's time (what a request at that time knows)."""
        if self._before is None:
            new = np.r_[True, (np.diff(self.viewer) != 0) | (np.diff(self.time) != 0)]
            starts = np.flatnonzero(new)
            self._before = np.repeat(starts, np.diff(np.r_[starts, len(self)]))
        return self._before[np.asarray(rows)]

    def batch(self, rows: np.ndarray, max_history: int, causal: bool = False) -> tuple[History, torch.Tensor]:
        """Histories (left-padded to max_history) and target SIDs (B, L) for target rows.

        `causal`: a history holds only the watches strictly before the target's time, as a request
        at that time sees it (`history_at`); otherwise every earlier row, the other rooms the viewer
        opened at the same instant of the same visit included.
        """
        rows = np.asarray(rows)
        end = self.before(rows) if causal else rows
        offsets = np.arange(-max_history, 0)  # (H,)
        idx = end[:, None] + offsets[None, :]  # (B, H)
        valid = idx >= self.first[rows][:, None]
        idx = np.where(valid, idx, rows[:, None])  # padded slots read the target row, masked out below
        hist = History(
            codes=torch.from_numpy(np.where(valid[..., None], self.sid[idx], 0)),
            kind=torch.full(idx.shape, WATCH, dtype=torch.long, device="cpu"),
            watch=torch.from_numpy(np.where(valid, self.watch[idx], 0.0)).float(),
            time=torch.from_numpy(np.where(valid, self.time[idx], self.time[rows][:, None])),  # float64
            valid=torch.from_numpy(valid),
            now=torch.from_numpy(self.time[rows]),
        )
        return hist, torch.from_numpy(self.sid[rows])

    def history_at(self, viewer: int, now: float, max_history: int) -> History:
        """One request: the viewer's last `max_history` watches before `now` (none: cold start, T = 0)."""
        lo, hi = np.searchsorted(self.viewer, viewer, "left"), np.searchsorted(self.viewer, viewer, "right")
        rows = np.arange(lo, hi)[self.time[lo:hi] < now][-max_history:]
        return History.one(self.sid[rows], self.watch[rows], self.time[rows], now)

    def is_repeat(self, rows: np.ndarray) -> np.ndarray:
        """Whether each target's streamer appears earlier in the viewer's history (repeat consumption)."""
        out = np.zeros(len(rows), dtype=bool)
        for i, r in enumerate(rows):
            out[i] = bool(np.any(self.streamer[self.first[r]:r] == self.streamer[r]))
        return out
