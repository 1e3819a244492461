"""`WorldData`: the seven tables of a live world, as Arrow, with Parquet round trip.

The simulator and every loader produce a `WorldData`; the event store imports and exports one.
A Parquet directory holds one `<table>.parquet` file per table plus `world.json` (provenance).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from livemind.errors import DataError
from livemind.world.schema import SCHEMAS, EventBatch, empty_table

TABLE_NAMES: tuple[str, ...] = tuple(SCHEMAS)


def _conform(name: str, table: pa.Table) -> pa.Table:
    """Cast `table` to the canonical schema of `name`, naming missing columns."""
    schema = SCHEMAS[name]
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise DataError(f"table {name!r} lacks column(s) {missing}; expected {schema.names}")
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"table {name!r} does not match its schema: {exc}") from exc


@dataclass
class WorldData:
    streamers: pa.Table = field(default_factory=lambda: empty_table("streamers"))
    rooms: pa.Table = field(default_factory=lambda: empty_table("rooms"))
    segments: pa.Table = field(default_factory=lambda: empty_table("segments"))
    products: pa.Table = field(default_factory=lambda: empty_table("products"))
    viewers: pa.Table = field(default_factory=lambda: empty_table("viewers"))
    events: pa.Table = field(default_factory=lambda: empty_table("events"))
    questions: pa.Table = field(default_factory=lambda: empty_table("questions"))
    meta: dict[str, Any] = field(default_factory=dict)  # provenance: source, config, skipped rows

    def __post_init__(self) -> None:
        for name in TABLE_NAMES:
            setattr(self, name, _conform(name, getattr(self, name)))

    def table(self, name: str) -> pa.Table:
        if name not in TABLE_NAMES:
            raise DataError(f"unknown table {name!r}; expected one of {list(TABLE_NAMES)}")
        return getattr(self, name)

    def event_batch(self) -> EventBatch:
        return EventBatch.from_arrow(self.events)

    def counts(self) -> dict[str, int]:
        return {name: self.table(name).num_rows for name in TABLE_NAMES}

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name in TABLE_NAMES:
            pq.write_table(self.table(name), out / f"{name}.parquet")
        (out / "world.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True, default=str))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> WorldData:
        src = Path(directory)
        if not src.is_dir():
            raise DataError(f"world directory {str(src)!r} does not exist")
        tables: dict[str, pa.Table] = {}
        for name in TABLE_NAMES:
            path = src / f"{name}.parquet"
            if not path.is_file():
                raise DataError(f"{src}: missing {name}.parquet (a world directory holds {list(TABLE_NAMES)})")
            tables[name] = pq.read_table(path)
        meta_path = src / "world.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        return cls(**tables, meta=meta)
