"""What a live room's identity says beside its content: the signals OneLive's live-room prior reads.

A semantic ID describes what a room shows now, not *who* it is, so a generator of SIDs cannot see
that a live room is the viewer's favourite streamer or that half the site is watching it. LiveRec
adds exactly this (repeat consumption) to SASRec, and every production cascade ranks on it. For a
request (viewer v, time t) and each room live at t:

- audience: log1p(watches of the room in the `window` seconds before t);
- familiarity: log1p(v's watches of the room's streamer before t);
- follow: 1 if v followed the streamer before t;
- last: 1 if the streamer is the one v watched last;
- topic share: the fraction of v's last `history` watches whose segment, when watched, had the
  topic (product category, or chat) the room's segment has at t. A SID carries the content only
  as far as the tokenizer's codes separate it; the topic label is the platform's own metadata.

Everything is read from the event log as of t, nothing later. The generator adds a learned
score of these signals to log P(SID) of each live room (`GeneratorConfig.room_signals`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from livemind.rec.data.feedback import ViewerState, time_key, topic_share
from livemind.rec.data.watch import WatchLog

if TYPE_CHECKING:
    from livemind.rec.live.rooms import LiveRooms

SIGNALS: tuple[str, ...] = ("audience", "familiarity", "follow", "last", "topic_share")


@dataclass(frozen=True)
class SignalConfig:
    """How the signals are read; part of the generator's config and checkpoint, so that what is
    served reads them exactly as training did."""

    window: float = 3600.0  # seconds of watches that count as a room's audience now
    history: int = 30  # the viewer's last watches read for topic share

    def __post_init__(self) -> None:
        if not self.window > 0:
            raise ValueError(f"window must be positive, got {self.window}")
        if self.history < 1:
            raise ValueError(f"history must be at least 1 watch, got {self.history}")


def signal_matrix(audience: np.ndarray, watches: np.ndarray, follows: np.ndarray, same_as_last: np.ndarray,
                  share: np.ndarray) -> np.ndarray:
    """(N, S) float32 signals in the order of SIGNALS from their counts: the one formula that offline
    evaluation (`RoomSignals`) and the live state (`livemind.rec.live.state`) share.

    >>> signal_matrix(np.array([0, 3]), np.array([1, 0]), np.array([True, False]), np.array([False, True]),
    ...               np.array([0.5, 0.0])).astype(float).round(3).tolist()
    [[0.0, 0.693, 1.0, 0.0, 0.5], [1.386, 0.0, 0.0, 1.0, 0.0]]
    """
    return np.stack([
        np.log1p(np.asarray(audience, dtype=np.float64)),  # watches of the room in the window before t
        np.log1p(np.asarray(watches, dtype=np.float64)),  # the viewer's watches of its streamer before t
        np.asarray(follows, dtype=np.float64),  # the viewer followed its streamer before t
        np.asarray(same_as_last, dtype=np.float64),  # its streamer is the viewer's last watched
        np.asarray(share, dtype=np.float64),  # topic share of the viewer's last watches
    ], axis=1).astype(np.float32)


@dataclass
class RoomBatch:
    """The rooms live at each request of a batch, padded to C: what the room softmax ranks.

    rooms (B, C) int64 (-1 = padding); codes (B, C, L) their SIDs now; signals (B, C, S) float32;
    mask (B, C) bool; target (B,) index of the watched room among them (-1 when it is not live).
    """

    rooms: np.ndarray
    codes: torch.Tensor
    signals: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor


class RoomSignals:
    """Identity signals of live rooms for requests of a watch log (or any viewer and time)."""

    def __init__(self, log: WatchLog, state: ViewerState, live: LiveRooms,
                 config: SignalConfig | None = None) -> None:
        config = SignalConfig() if config is None else config
        window = config.window
        self.log, self.state, self.live, self.config = log, state, live, config
        self.window, self.history = config.window, config.history
        # per log row: the topic of the segment watched (-1: none)
        self.watch_topic = log.topic if log.topic is not None else live.frame.topic_of(live.frame.lookup(log.room, log.time))
        self.t0 = float(log.time.min()) - window - 1.0 if len(log) else 0.0
        self.span = float(log.time.max() - self.t0 + 2.0) if len(log) else 2.0
        order = np.lexsort((log.time, log.room))
        self._room_watches = time_key(log.room[order], log.time[order], self.t0, self.span)  # sorted

    def audience(self, rooms: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Watches of each room in the `window` seconds before each time (broadcast), int."""
        rooms = np.asarray(rooms, dtype=np.int64)
        times = np.broadcast_to(np.asarray(times, dtype=np.float64), rooms.shape)
        hi = np.searchsorted(self._room_watches, time_key(rooms, times, self.t0, self.span), "left")
        lo = np.searchsorted(self._room_watches, time_key(rooms, times - self.window, self.t0, self.span), "left")
        return hi - lo

    def signals(self, viewer: int, t: float, rooms: np.ndarray, lo: int, end: int,
                segs: np.ndarray | None = None) -> np.ndarray:
        """(C, S) float32 signals of `rooms` for viewer `viewer` at `t`, whose watches before t are
        the log rows [lo, end); `segs`: the rooms' segments at t when the caller has them."""
        rooms = np.asarray(rooms, dtype=np.int64)
        segs = self.live.frame.lookup(rooms, np.full(len(rooms), t)) if segs is None else segs
        n = len(rooms)
        return self.entries(np.full(n, viewer), np.full(n, t), rooms, np.full(n, lo), np.full(n, end), segs)

    def entries(self, viewers: np.ndarray, times: np.ndarray, rooms: np.ndarray, lo: np.ndarray, end: np.ndarray,
                segs: np.ndarray) -> np.ndarray:
        """(N, S) float32 signals of N (viewer, time, room) entries, all arrays (N,): each viewer's
        watches before its time are the log rows [lo, end), `segs` the room's segment at the time."""
        s = self.live.streamer_of(rooms)
        now = self.live.frame.topic_of(segs, missing=-2)  # no segment now: matches no past watch
        idx = end[:, None] - self.history + np.arange(self.history)  # (N, history): the last watches
        share = topic_share(self.watch_topic, np.maximum(idx, 0), idx >= lo[:, None], now)
        last = np.where(end > lo, self.log.streamer[np.maximum(end - 1, 0)], -1)
        return signal_matrix(self.audience(rooms, times), self.state.watches(viewers, s, times),
                             self.state.follows(viewers, s, times), s == last, share)

    def for_request(self, viewer: int, t: float, rooms: np.ndarray) -> np.ndarray:
        """(C, S) signals of `rooms` for a request by `viewer` at `t`, from their watches before t."""
        lo, hi = np.searchsorted(self.log.viewer, viewer, "left"), np.searchsorted(self.log.viewer, viewer, "right")
        end = lo + int(np.searchsorted(self.log.time[lo:hi], t, "left"))  # a viewer's rows are sorted by time
        return self.signals(viewer, t, rooms, int(lo), end)

    def for_row(self, row: int, rooms: np.ndarray, segs: np.ndarray | None = None) -> np.ndarray:
        """(C, S) signals of `rooms` for the request of log row `row` (its viewer, at its time)."""
        return self.signals(int(self.log.viewer[row]), float(self.log.time[row]), rooms, int(self.log.first[row]), row,
                            segs)

    def at_row(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For the request of log row `row`: live rooms with a segment, their SIDs (C, L) and signals (C, S)."""
        rooms, segs = self.live.live_segments(float(self.log.time[row]))
        return rooms, self.live.codes[segs], self.for_row(row, rooms, segs)

    def batch(self, rows: np.ndarray, negatives: int | None = None,
              rng: np.random.Generator | None = None, causal: bool = False) -> RoomBatch:
        """The live rooms of each request row, padded, with the index of the room watched at that row.

        `negatives`: keep the watched room and a random `negatives` of the other live rooms (a
        sampled softmax, for training); None keeps every live room. `causal`: the signals read only
        the viewer's watches strictly before the row's time (`WatchLog.batch`).
        """
        rows = np.asarray(rows, dtype=np.int64)
        ends = self.log.before(rows) if causal else rows
        parts = []
        for r in rows:
            rooms, segs = self.live.live_segments(float(self.log.time[r]))
            if negatives is not None and len(rooms) > negatives + 1:
                own = np.flatnonzero(rooms == self.log.room[r])
                others = np.setdiff1d(np.arange(len(rooms)), own)
                keep = np.sort(np.r_[own, (rng or np.random.default_rng()).choice(others, negatives, replace=False)])
                rooms, segs = rooms[keep], segs[keep]
            parts.append((rooms, segs))
        B, C = len(parts), max((len(p[0]) for p in parts), default=0)
        rooms = np.full((B, C), -1, dtype=np.int64)
        segs = np.zeros((B, C), dtype=np.int64)
        for i, (r, g) in enumerate(parts):
            rooms[i, :len(r)], segs[i, :len(r)] = r, g
        mask = rooms >= 0
        b = np.nonzero(mask)[0]  # the request of each live (row, room) entry
        sig = np.zeros((B, C, len(SIGNALS)), dtype=np.float32)
        sig[mask] = self.entries(self.log.viewer[rows][b], self.log.time[rows][b], rooms[mask], self.log.first[rows][b],
                                 ends[b], segs[mask])
        codes = np.where(mask[..., None], self.live.codes[segs], 0).astype(np.int64)
        hit = rooms == self.log.room[rows][:, None]
        target = np.where(hit.any(1), hit.argmax(1), -1)
        return RoomBatch(rooms, torch.from_numpy(codes), torch.from_numpy(sig), torch.from_numpy(mask),
                         torch.from_numpy(target))
