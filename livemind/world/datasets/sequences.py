"""SASRec-style sequence files: one `user item` pair per line (whitespace separated, 1-based ids),
each user's lines in time order (e.g. ../shared/data/sasrec-games/Video.txt).

`read_sequences` gives {user: items in order}, what sequential models train on. `load_sequences`
maps the same data into the world schema: each item is a Room that is always live, each line a
`click` event whose time is the position in the user's sequence (0, 1, 2, ...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from livemind.world.datasets._rows import Col, parse_int, read_headerless
from livemind.world.tables import WorldData


def _check(row: dict[str, object]) -> str | None:
    if row["user"] < 1 or row["item"] < 1:  # type: ignore[operator]
        return f"ids must be positive (1-based), got user {row['user']} item {row['item']}"
    return None


def _read(path: Path, skip_bad: bool) -> tuple[np.ndarray, np.ndarray, int]:
    d, skipped = read_headerless(path, [Col("user", parse_int), Col("item", parse_int)], skip_bad,
                                 delimiter=None, check=_check)
    return d["user"].astype(np.int64), d["item"].astype(np.int64), skipped


def read_sequences(path: str | Path, skip_bad: bool = False) -> dict[int, np.ndarray]:
    users, items, _ = _read(Path(path), skip_bad)
    order = np.argsort(users, kind="stable")  # keeps each user's lines in file order
    users, items = users[order], items[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    return {int(u[0]): it for u, it in zip(np.split(users, bounds), np.split(items, bounds)) if len(u)}


def load_sequences(path: str | Path, skip_bad: bool = False) -> WorldData:
    path = Path(path)
    users, items, skipped = _read(path, skip_bad)
    order = np.argsort(users, kind="stable")
    u_sorted = users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(u_sorted)) + 1] if len(u_sorted) else np.zeros(0, dtype=np.int64)
    pos_sorted = np.arange(len(u_sorted)) - np.repeat(starts, np.diff(np.r_[starts, len(u_sorted)]))
    position = np.empty(len(users), dtype=np.float64)
    position[order] = pos_sorted
    horizon = float(position.max() + 1) if len(position) else 1.0
    room_ids = np.unique(items)
    rooms = pa.table({"id": room_ids, "streamer": room_ids, "start_time": np.zeros(len(room_ids)),
                      "end_time": np.full(len(room_ids), horizon), "title": [f"item {i}" for i in room_ids]})
    streamers = pa.table({"id": room_ids, "name": [f"item {i}" for i in room_ids],
                          "category": [""] * len(room_ids), "popularity": np.ones(len(room_ids))})
    uids = np.unique(users)
    viewers = pa.table({"id": uids, "home_hour": np.full(len(uids), np.nan),
                        "visits_per_day": np.full(len(uids), np.nan), "taste_category": [""] * len(uids)})
    events = pa.table({"viewer": users, "room": items, "time": position, "kind": ["click"] * len(users),
                       "value": np.zeros(len(users))})
    return WorldData(streamers=streamers, rooms=rooms, viewers=viewers, events=events,
                     meta={"source": "sequences", "path": str(path), "skipped_rows": skipped})
