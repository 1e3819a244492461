"""KuaiLive (Qu et al., 2025): real-time interactions on Kuaishou live rooms.

Files (CSV with a header; timestamps in milliseconds):
- `room.csv` or `mapped_room.csv`: live_id, streamer_id (or author_id), start_timestamp,
  end_timestamp, live_content_category (optional). A live_id listed on several dates becomes one
  room spanning all of them.
- `click.csv`: user_id, live_id, timestamp, watch_live_time (ms) -> a `click` and a `watch` event.
- `comment.csv`, `like.csv`: user_id, live_id, timestamp -> `comment` / `like` events.
- `gift.csv`: user_id, live_id, timestamp, gift_price -> `gift` events with the price as value.
- `streamer.csv` or `author.csv` (optional): streamer_id (or author_id), live_operation_tag.
- `user.csv` (optional): user_id.

An interaction with a live_id missing from the room file, or outside the room's live window, is a
bad row (file, line and value named; skipped and counted with `skip_bad`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from livemind.errors import DataError
from livemind.world.datasets._rows import Col, parse_float, parse_int, read_with_header
from livemind.world.schema import SCHEMAS
from livemind.world.tables import WorldData

_STREAMER = Col("streamer_id", parse_int, aliases=("author_id",))


def _first(directory: Path, *names: str, required: bool = True) -> Path | None:
    for n in names:
        if (directory / n).is_file():
            return directory / n
    if required:
        raise DataError(f"{directory}: none of {list(names)} found (a KuaiLive directory needs them)")
    return None


def _interactions(path: Path, kind: str, skip_bad: bool, value: Col | None, scale: float,
                  live: dict[int, tuple[float, float]]) -> tuple[pa.Table, int]:
    cols = [Col("user_id", parse_int), Col("live_id", parse_int), Col("timestamp", parse_int)]
    if value is not None:
        cols.append(value)

    def check(row: dict[str, object]) -> str | None:
        window = live.get(row["live_id"])  # type: ignore[arg-type]
        if window is None:
            return f"live_id {row['live_id']} is not in the room file"
        if not window[0] <= row["timestamp"] < window[1]:  # type: ignore[operator]
            return f"live_id {row['live_id']} is not live at timestamp {row['timestamp']} (live {window[0]:.0f}..{window[1]:.0f})"
        return None

    d, skipped = read_with_header(path, cols, skip_bad, check=check)
    n = len(d["user_id"])
    vals = d[value.name].astype(np.float64) * scale if value is not None else np.zeros(n)
    return pa.table({
        "viewer": d["user_id"].astype(np.int64), "room": d["live_id"].astype(np.int64),
        "time": d["timestamp"].astype(np.float64) / 1000.0, "kind": [kind] * n, "value": vals,
    }, schema=SCHEMAS["events"]), skipped


def load_kuailive(directory: str | Path, skip_bad: bool = False) -> WorldData:
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"KuaiLive directory {str(directory)!r} does not exist")
    skipped: dict[str, int] = {}

    room_path = _first(directory, "room.csv", "mapped_room.csv")
    d, skipped[room_path.name] = read_with_header(
        room_path,
        [Col("live_id", parse_int), _STREAMER, Col("start_timestamp", parse_int), Col("end_timestamp", parse_int),
         Col("live_content_category", str, required=False)],
        skip_bad,
        check=lambda r: None if r["end_timestamp"] > r["start_timestamp"]
        else f"end_timestamp {r['end_timestamp']} is not after start_timestamp {r['start_timestamp']}",
    )
    ids, first = np.unique(d["live_id"], return_index=True)
    inv = np.searchsorted(ids, d["live_id"])
    start = np.full(len(ids), np.inf)
    end = np.full(len(ids), -np.inf)
    np.minimum.at(start, inv, d["start_timestamp"].astype(np.float64) / 1000.0)
    np.maximum.at(end, inv, d["end_timestamp"].astype(np.float64) / 1000.0)
    cats = d["live_content_category"]
    rooms = pa.table({
        "id": ids.astype(np.int64), "streamer": d["streamer_id"][first].astype(np.int64),
        "start_time": start, "end_time": end,
        "title": ["" if cats[i] is None else str(cats[i]) for i in first],
    })

    live = {int(i): (s * 1000.0, e * 1000.0) for i, s, e in zip(ids, start, end)}  # ms, as in the event files
    events, n_skip = _interactions(_first(directory, "click.csv"), "click", skip_bad,
                                   Col("watch_live_time", parse_float), 1.0, live)
    skipped["click.csv"] = n_skip
    watch = events.set_column(events.schema.get_field_index("kind"), "kind", pa.array(["watch"] * events.num_rows))
    clicks = events.set_column(events.schema.get_field_index("value"), "value", pa.array(np.zeros(events.num_rows)))
    watch = watch.set_column(watch.schema.get_field_index("value"), "value",
                             pa.array(watch.column("value").to_numpy() / 1000.0))
    parts = [clicks, watch]
    for name, kind, value in (("comment.csv", "comment", None), ("like.csv", "like", None),
                              ("gift.csv", "gift", Col("gift_price", parse_float))):
        path = directory / name
        if path.is_file():
            table, skipped[name] = _interactions(path, kind, skip_bad, value, 1.0, live)
            parts.append(table)
    events = pa.concat_tables(parts)
    events = events.take(pc.sort_indices(events, [("time", "ascending")]))

    streamer_path = _first(directory, "streamer.csv", "author.csv", required=False)
    if streamer_path is not None:
        s, skipped[streamer_path.name] = read_with_header(
            streamer_path, [_STREAMER, Col("live_operation_tag", str, required=False)], skip_bad)
        sid, tags = s["streamer_id"].astype(np.int64), s["live_operation_tag"]
    else:
        sid = np.unique(rooms.column("streamer").to_numpy())
        tags = np.array([None] * len(sid), dtype=object)
    streamers = pa.table({"id": sid, "name": [str(i) for i in sid],
                          "category": ["" if t is None else str(t) for t in tags], "popularity": np.ones(len(sid))})

    user_path = directory / "user.csv"
    if user_path.is_file():
        u, skipped["user.csv"] = read_with_header(user_path, [Col("user_id", parse_int)], skip_bad)
        uid = u["user_id"].astype(np.int64)
    else:
        uid = np.unique(events.column("viewer").to_numpy())
    viewers = pa.table({"id": uid, "home_hour": np.full(len(uid), np.nan),
                        "visits_per_day": np.full(len(uid), np.nan), "taste_category": [""] * len(uid)})
    return WorldData(streamers=streamers, rooms=rooms, viewers=viewers, events=events,
                     meta={"source": "kuailive", "path": str(directory), "skipped_rows": skipped})
