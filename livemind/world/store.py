"""The event store: DuckDB tables with the world schema, Parquet import/export.

- `append_events` validates a whole batch (known kinds, finite times, rooms that exist and are
  live at the event's time) inside one transaction: either every row lands or none does, so a
  failed append neither loses nor duplicates anything. When it returns, the rows are committed
  (DuckDB's write-ahead log makes a commit survive a crash of the process).
- Histories and live sets are plain SQL over indexed columns.
- One store object is safe to share between threads: every call takes its own cursor under a
  lock (DuckDB connections are not thread-safe).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa

from livemind.errors import DataError
from livemind.world.schema import EVENT_KINDS, SCHEMAS, EventBatch, kind_code
from livemind.world.tables import TABLE_NAMES, WorldData

_SQL_TYPES = {pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.string(): "VARCHAR", pa.list_(pa.string()): "VARCHAR[]"}


def _ddl(name: str) -> str:
    cols = ", ".join(f'"{f.name}" {_SQL_TYPES[f.type]}' for f in SCHEMAS[name])
    return f'CREATE TABLE IF NOT EXISTS "{name}" ({cols})'


class EventStore:
    """A DuckDB database holding one live world (`path=":memory:"` for a throwaway one)."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(self.path)
        self._lock = threading.RLock()
        with self._lock:
            for name in TABLE_NAMES:
                self._con.execute(_ddl(name))
            self._con.execute("CREATE INDEX IF NOT EXISTS rooms_id ON rooms (id)")

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------- writes

    def append_table(self, name: str, table: pa.Table) -> int:
        """Append rows to a static table (streamers, rooms, segments, products, viewers, questions)."""
        if name == "events":
            raise DataError("append events with append_events, which checks that their rooms are live")
        conformed = WorldData(**{name: table}).table(name)
        with self._lock:
            cur = self._con.cursor()
            cur.register("incoming", conformed)
            cur.execute(f'INSERT INTO "{name}" SELECT * FROM incoming')
            cur.unregister("incoming")
        return conformed.num_rows

    def append_events(self, batch: EventBatch | pa.Table,
                      on_bad: Literal["error", "skip"] = "error") -> tuple[int, int]:
        """Append a batch atomically; returns (rows stored, rows skipped).

        A row is bad when its room is unknown or not live at its time. With on_bad="error" the
        first bad row raises a DataError naming its position, room and time and nothing is
        stored; with "skip" the bad rows are dropped and counted.
        """
        table = batch.to_arrow() if isinstance(batch, EventBatch) else batch
        if not isinstance(table, pa.Table):
            raise DataError(f"append_events expects an EventBatch or an Arrow table, got {type(batch).__name__}")
        table = WorldData(events=table).events
        kinds = set(table.column("kind").unique().to_pylist())
        for k in sorted(kinds - set(EVENT_KINDS), key=str):
            kind_code(k)  # raises a DataError naming the kind
        times = table.column("time").to_numpy(zero_copy_only=False)
        bad_time = np.flatnonzero(~np.isfinite(times))
        if len(bad_time):
            raise DataError(f"event row {bad_time[0]}: time {float(times[bad_time[0]])} is not a finite number of seconds")
        table = table.append_column("_row", pa.array(np.arange(table.num_rows), pa.int64()))
        with self._lock:
            cur = self._con.cursor()
            cur.register("incoming", table)
            try:
                cur.execute("BEGIN TRANSACTION")
                bad = cur.execute(
                    "SELECT b._row, b.room, b.time, r.id IS NULL, r.start_time, r.end_time FROM incoming b "
                    "LEFT JOIN rooms r ON b.room = r.id "
                    "WHERE r.id IS NULL OR b.time < r.start_time OR b.time >= r.end_time ORDER BY b._row"
                ).fetchall()
                if bad and on_bad == "error":
                    row, room, t, unknown, start, end = bad[0]
                    why = "is unknown" if unknown else f"is not live at t={t:g} (live {start:g}..{end:g})"
                    raise DataError(f"event row {row}: room {room} {why}; nothing from this batch was stored")
                skip = {b[0] for b in bad}
                cur.execute(
                    "INSERT INTO events SELECT viewer, room, time, kind, value FROM incoming b "
                    + ("WHERE b._row NOT IN (SELECT unnest(?::BIGINT[]))" if skip else ""),
                    [sorted(skip)] if skip else None,
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            finally:
                cur.unregister("incoming")
        return table.num_rows - len(skip), len(skip)

    def import_world(self, world: WorldData, on_bad: Literal["error", "skip"] = "error") -> tuple[int, int]:
        """Append every table of `world`; returns (events stored, events skipped)."""
        for name in TABLE_NAMES:
            if name != "events" and world.table(name).num_rows:
                self.append_table(name, world.table(name))
        return self.append_events(world.events, on_bad=on_bad)

    def import_parquet(self, directory: str | Path, on_bad: Literal["error", "skip"] = "error") -> tuple[int, int]:
        return self.import_world(WorldData.load(directory), on_bad=on_bad)

    # ----------------------------------------------------------------------------------- reads

    def query(self, sql: str, params: list | None = None) -> pa.Table:
        with self._lock:
            return self._con.cursor().sql(sql, params=params).to_arrow_table()

    def to_world(self) -> WorldData:
        return WorldData(**{name: self.query(f'SELECT * FROM "{name}"') for name in TABLE_NAMES})

    def export_parquet(self, directory: str | Path) -> Path:
        return self.to_world().save(directory)

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return int(self.query("SELECT count(*) AS n FROM events").column("n")[0].as_py())
        kind_code(kind)
        return int(self.query("SELECT count(*) AS n FROM events WHERE kind = ?", [kind]).column("n")[0].as_py())

    def history(self, viewer: int, until: float, kinds: tuple[str, ...] | None = None,
                limit: int | None = None) -> EventBatch:
        """The viewer's events strictly before `until`, oldest first (the last `limit` if given)."""
        where = "viewer = ? AND time < ?"
        params: list = [int(viewer), float(until)]
        if kinds:
            for k in kinds:
                kind_code(k)
            where += " AND kind IN (SELECT unnest(?::VARCHAR[]))"
            params.append(list(kinds))
        sql = f"SELECT viewer, room, time, kind, value FROM events WHERE {where} ORDER BY time DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        table = self.query(sql, params)
        return EventBatch.from_arrow(table).take(np.arange(table.num_rows)[::-1])

    def live_rooms(self, t: float) -> np.ndarray:
        """Ids of rooms live at time t, ascending."""
        table = self.query("SELECT id FROM rooms WHERE start_time <= ? AND ? < end_time ORDER BY id", [float(t), float(t)])
        return table.column("id").to_numpy(zero_copy_only=False).astype(np.int64)
