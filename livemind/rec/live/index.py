"""`LiveIndex`: the semantic IDs of the rooms that are live now (OneLive §3, "constrained to rooms
that are live now").

Writers (room start, new segment, room end) change the index under a lock; readers take a
`LiveSnapshot`, an immutable view built once per change, so a beam search that makes many reads
sees one consistent state while updates go on.

Collisions: several live rooms may share one SID. The index keeps every room of a SID (`rooms_for`
returns all of them, oldest first), so decoding a SID reaches each of them; the collision rate is
reported rather than hidden by an extra de-duplication digit.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np

from livemind.errors import DataError

SID = tuple[int, ...]


@dataclass(frozen=True)
class LiveSnapshot:
    """A consistent, read-only view of the live index."""

    version: str  # tokenizer version the SIDs belong to
    levels: int
    rooms: np.ndarray  # (n,) room ids, ascending
    codes: np.ndarray  # (n, L) SID of each room
    by_sid: dict[SID, tuple[int, ...]]  # SID -> rooms carrying it
    next_codes: dict[SID, np.ndarray]  # prefix (length 0..L-1) -> sorted codes that continue it

    def allowed_next(self, prefix: SID) -> np.ndarray:
        return self.next_codes.get(tuple(prefix), np.zeros(0, dtype=np.int64))

    def rooms_for(self, sid: SID) -> tuple[int, ...]:
        return self.by_sid.get(tuple(sid), ())

    def collision_rate(self) -> float:
        """Share of live rooms whose SID is carried by another live room too."""
        if not len(self.rooms):
            return 0.0
        shared = sum(len(r) for r in self.by_sid.values() if len(r) > 1)
        return shared / len(self.rooms)


class LiveIndex:
    def __init__(self, levels: int, version: str) -> None:
        if levels < 1:
            raise DataError(f"levels must be at least 1, got {levels}")
        self.levels = levels
        self.version = version
        self._lock = threading.Lock()
        self._sid: dict[int, SID] = {}
        self._by_sid: dict[SID, list[int]] = {}
        self._prefix: dict[SID, Counter[int]] = {}
        self._snapshot: LiveSnapshot | None = None

    def __len__(self) -> int:
        return len(self._sid)

    def __contains__(self, room: int) -> bool:
        return room in self._sid

    def _check(self, sid: SID) -> SID:
        sid = tuple(int(c) for c in sid)
        if len(sid) != self.levels:
            raise DataError(f"SID {sid} has {len(sid)} codes, the index holds {self.levels}-level SIDs")
        return sid

    def _insert(self, room: int, sid: SID) -> None:
        self._sid[room] = sid
        self._by_sid.setdefault(sid, []).append(room)
        for level in range(self.levels):
            self._prefix.setdefault(sid[:level], Counter())[sid[level]] += 1

    def _delete(self, room: int) -> None:
        sid = self._sid.pop(room)
        rooms = self._by_sid[sid]
        rooms.remove(room)
        if not rooms:
            del self._by_sid[sid]
        for level in range(self.levels):
            counter = self._prefix[sid[:level]]
            counter[sid[level]] -= 1
            if counter[sid[level]] == 0:
                del counter[sid[level]]
                if not counter:
                    del self._prefix[sid[:level]]

    def upsert(self, room: int, sid: SID) -> None:
        """Room `room` now carries `sid` (on room start or a new segment)."""
        sid = self._check(sid)
        with self._lock:
            if self._sid.get(room) == sid:
                return
            if room in self._sid:
                self._delete(room)
            self._insert(room, sid)
            self._snapshot = None

    def remove(self, room: int) -> None:
        """Room `room` ended; unknown rooms are an error (the index is unchanged)."""
        with self._lock:
            if room not in self._sid:
                raise DataError(f"room {room} is not in the live index")
            self._delete(room)
            self._snapshot = None

    def replace_all(self, sids: dict[int, SID], version: str) -> None:
        """Swap in SIDs of a new tokenizer version for every live room at once."""
        checked = {room: self._check(sid) for room, sid in sids.items()}
        with self._lock:
            self._sid, self._by_sid, self._prefix = {}, {}, {}
            for room, sid in checked.items():
                self._insert(room, sid)
            self.version = version
            self._snapshot = None

    def sid_of(self, room: int) -> SID | None:
        with self._lock:
            return self._sid.get(room)

    def snapshot(self) -> LiveSnapshot:
        with self._lock:
            if self._snapshot is None:
                rooms = np.array(sorted(self._sid), dtype=np.int64)
                codes = np.array([self._sid[r] for r in rooms], dtype=np.int64).reshape(len(rooms), self.levels)
                self._snapshot = LiveSnapshot(
                    version=self.version,
                    levels=self.levels,
                    rooms=rooms,
                    codes=codes,
                    by_sid={sid: tuple(rs) for sid, rs in self._by_sid.items()},
                    next_codes={p: np.array(sorted(c), dtype=np.int64) for p, c in self._prefix.items()},
                )
            return self._snapshot
