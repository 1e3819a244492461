"""The Twitch dataset of Rappaz, McAuley & Aberer (RecSys 2021, "dynamic availability and repeat
consumption"): headerless CSV rows `user,stream,streamer,start,stop`, where start and stop count
10-minute steps and the user was seen in the stream's chat on [start, stop).

Mapping: a stream is a Room (live from its first start to its last stop over all rows), a
streamer name a Streamer, each row a `watch` event at `start` with value `(stop - start)` seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from livemind.world.datasets._rows import Col, parse_int, read_headerless
from livemind.world.tables import WorldData

STEP_SECONDS = 600.0


def _check(row: dict[str, object]) -> str | None:
    if row["start"] < 0:  # type: ignore[operator]
        return f"start {row['start']} is negative"
    if row["stop"] <= row["start"]:  # type: ignore[operator]
        return f"stop {row['stop']} is not after start {row['start']}"
    return None


def load_twitch(path: str | Path, skip_bad: bool = False, step_seconds: float = STEP_SECONDS) -> WorldData:
    path = Path(path)
    cols = [Col("user", parse_int), Col("stream", parse_int), Col("streamer", str), Col("start", parse_int),
            Col("stop", parse_int)]
    d, skipped = read_headerless(path, cols, skip_bad, check=_check)
    names, streamer_idx = np.unique(d["streamer"].astype(str), return_inverse=True)
    streams, first = np.unique(d["stream"], return_index=True)
    inv = np.searchsorted(streams, d["stream"])
    start = np.full(len(streams), np.inf)
    stop = np.full(len(streams), -np.inf)
    np.minimum.at(start, inv, d["start"].astype(np.float64))
    np.maximum.at(stop, inv, d["stop"].astype(np.float64))
    rooms = pa.table({
        "id": streams.astype(np.int64), "streamer": streamer_idx[first].astype(np.int64),
        "start_time": start * step_seconds, "end_time": stop * step_seconds,
        "title": [str(n) for n in names[streamer_idx[first]]],
    })
    streamers = pa.table({"id": np.arange(len(names), dtype=np.int64), "name": [str(n) for n in names],
                          "category": [""] * len(names), "popularity": np.ones(len(names))})
    n = len(d["user"])
    events = pa.table({
        "viewer": d["user"].astype(np.int64), "room": d["stream"].astype(np.int64),
        "time": d["start"].astype(np.float64) * step_seconds, "kind": ["watch"] * n,
        "value": (d["stop"] - d["start"]).astype(np.float64) * step_seconds,
    })
    users = np.unique(d["user"]).astype(np.int64)
    viewers = pa.table({"id": users, "home_hour": np.full(len(users), np.nan),
                        "visits_per_day": np.full(len(users), np.nan), "taste_category": [""] * len(users)})
    return WorldData(streamers=streamers, rooms=rooms, viewers=viewers, events=events,
                     meta={"source": "twitch", "path": str(path), "skipped_rows": skipped})
