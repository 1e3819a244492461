"""The live event log: every acknowledged live event, durable, in arrival order, in DuckDB.

A live platform sends what happens as it happens: a room starts (`Room` with an open end), a
segment is shown (`Segment`), a viewer acts (`Event`), a room ends (`RoomEnd`). The service
appends each validated batch here in one transaction and acknowledges it only after the commit
(DuckDB writes its write-ahead log before a commit returns), so an acknowledged event survives
`kill -9`; the live state is rebuilt by reading the log back in offset order.

One table, one row per event, typed columns (the union of the record types' fields; a column a
kind does not use is NULL), and a dense `offset` from 1: the reply's `offset` is the last row of
the batch.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from livemind.errors import DataError
from livemind.world.schema import EVENT_KINDS, Event, EventKind, Room, Segment


@dataclass(frozen=True, slots=True)
class RoomEnd:
    """A room stops being live at `time` (its `Room.end_time`)."""

    room: int
    time: float


LiveRecord = Room | Segment | Event | RoomEnd

_SCHEMA = pa.schema([
    ("offset", pa.int64()), ("kind", pa.string()), ("room", pa.int64()), ("viewer", pa.int64()),
    ("streamer", pa.int64()), ("time", pa.float64()), ("value", pa.float64()), ("index", pa.int64()),
    ("product", pa.int64()), ("topic", pa.string()), ("text", pa.string()), ("title", pa.string()),
])
_DDL = ('CREATE TABLE IF NOT EXISTS live_events ("offset" BIGINT, kind VARCHAR, room BIGINT, '
        'viewer BIGINT, streamer BIGINT, time DOUBLE, value DOUBLE, "index" BIGINT, product BIGINT, '
        'topic VARCHAR, text VARCHAR, title VARCHAR); '
        # a client's batch id -> the offset of the batch's last record: a retried batch is stored once
        'CREATE TABLE IF NOT EXISTS live_batches (batch_id VARCHAR PRIMARY KEY, last_offset BIGINT)')


def kind_of(record: LiveRecord) -> str:
    """The wire name of a record's kind: room_start, room_end, segment or an event kind."""
    if isinstance(record, Room):
        return "room_start"
    if isinstance(record, RoomEnd):
        return "room_end"
    if isinstance(record, Segment):
        return "segment"
    return EventKind(record.kind).value


def time_of(record: LiveRecord) -> float:
    if isinstance(record, Room):
        return record.start_time
    if isinstance(record, Segment):
        return record.start_time
    return record.time


def _columns(first: int, records: Sequence[LiveRecord]) -> pa.Table:
    """The records as one Arrow table of the log's schema (column by column: no dict per row)."""
    n = len(records)
    cols: dict[str, list] = {name: [None] * n for name in _SCHEMA.names}
    cols["offset"] = list(range(first, first + n))
    kind, room, time, viewer, value = cols["kind"], cols["room"], cols["time"], cols["viewer"], cols["value"]
    for i, r in enumerate(records):
        if type(r) is Event:
            kind[i], room[i], time[i], viewer[i], value[i] = r.kind.value, r.room, float(r.time), r.viewer, float(r.value)
        elif isinstance(r, Segment):
            kind[i], room[i], time[i] = "segment", r.room, float(r.start_time)
            cols["index"][i], cols["text"][i], cols["product"][i], cols["topic"][i] = r.index, r.text, r.product, r.topic
        elif isinstance(r, Room):
            kind[i], room[i], time[i] = "room_start", r.id, float(r.start_time)
            cols["streamer"][i], cols["title"][i] = r.streamer, r.title
        elif isinstance(r, RoomEnd):
            kind[i], room[i], time[i] = "room_end", r.room, float(r.time)
        else:
            raise DataError(f"record {i}: {type(r).__name__} is not a live record")
    return pa.table(cols, schema=_SCHEMA)


def _record(row: dict) -> LiveRecord:
    kind = row["kind"]
    if kind == "room_start":
        return Room(int(row["room"]), int(row["streamer"]), float(row["time"]), math.inf, row["title"] or "")
    if kind == "room_end":
        return RoomEnd(int(row["room"]), float(row["time"]))
    if kind == "segment":
        return Segment(int(row["room"]), int(row["index"]), float(row["time"]), row["text"], int(row["product"]),
                       row["topic"] or "")
    if kind not in EVENT_KINDS:
        raise DataError(f"live log row {row['offset']}: unknown kind {kind!r}")
    return Event(int(row["viewer"]), int(row["room"]), float(row["time"]), EventKind(kind), float(row["value"]))


class LiveLog:
    """Append-only, durable log of live records (`path=":memory:"` for a throwaway one)."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(self.path)
        except duckdb.Error as exc:
            raise DataError(f"{self.path}: cannot open the live event log ({exc})") from exc
        self._lock = threading.Lock()
        with self._lock:
            self._con.execute(_DDL)
            self._offset = int(self._con.execute('SELECT coalesce(max("offset"), 0) FROM live_events').fetchone()[0])

    @property
    def offset(self) -> int:
        """Offset of the last acknowledged record (0: empty)."""
        return self._offset

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> LiveLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def batch(self, batch_id: str) -> int | None:
        """The offset of the last record of the batch a client sent as `batch_id`, None if never stored."""
        with self._lock:
            row = self._con.cursor().execute("SELECT last_offset FROM live_batches WHERE batch_id = ?",
                                             [batch_id]).fetchone()
        return None if row is None else int(row[0])

    def append(self, records: Sequence[LiveRecord], first: int | None = None, batch_id: str | None = None) -> int:
        """Append `records` in one transaction; returns the offset of the last one. When this returns,
        the records are committed (durable); on any error nothing of the batch is stored.

        `first`: the offset the batch was numbered from elsewhere (the broker's event ids). A batch the
        log already holds is skipped (a redelivery changes nothing); one that would leave a gap is refused.
        `batch_id`: the client's id of the batch, stored in the same transaction (see `batch`)."""
        if not records:
            return self._offset
        with self._lock:
            if first is not None:
                if first + len(records) - 1 <= self._offset:
                    return self._offset
                if first != self._offset + 1:
                    raise DataError(f"a batch numbered from {first}; the log holds offsets up to {self._offset}, "
                                    f"so it must start at {self._offset + 1}")
            first = self._offset + 1
            table = _columns(first, records)
            cur = self._con.cursor()
            cur.register("incoming", table)
            try:
                cur.execute("BEGIN TRANSACTION")
                cur.execute("INSERT INTO live_events SELECT * FROM incoming")
                if batch_id is not None:
                    cur.execute("INSERT INTO live_batches VALUES (?, ?)", [batch_id, first + len(records) - 1])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            finally:
                cur.unregister("incoming")
            self._offset = first + len(records) - 1
            return self._offset

    def read(self, after: int = 0, batch: int = 50_000) -> Iterator[list[LiveRecord]]:
        """Every record with offset > `after`, oldest first, in lists of at most `batch`."""
        with self._lock:
            end = self._offset
        lo = after
        while lo < end:
            with self._lock:
                table = self._con.cursor().execute(
                    'SELECT * FROM live_events WHERE "offset" > ? AND "offset" <= ? ORDER BY "offset"',
                    [lo, min(lo + batch, end)]).to_arrow_table()
            yield [_record(row) for row in table.to_pylist()]
            lo += batch

    def count(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT count(*) FROM live_events").fetchone()[0])

    def offsets(self) -> np.ndarray:
        """Every stored offset, ascending (for durability checks)."""
        with self._lock:
            return self._con.execute('SELECT "offset" FROM live_events ORDER BY "offset"').fetchnumpy()["offset"]
