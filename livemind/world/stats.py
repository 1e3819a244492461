"""A readable summary of a world: counts, live rooms over time, repeat consumption, content change.

Computed with DuckDB straight over the Arrow tables, so it works the same for a simulated world,
a loaded dataset or an exported store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from livemind.world.schema import EVENT_KINDS
from livemind.world.tables import TABLE_NAMES, WorldData


@dataclass
class WorldStats:
    tables: dict[str, int]
    events_by_kind: dict[str, int]
    ctr: float | None  # clicks / impressions, None without impressions
    repeat_ratio: float | None  # share of watches of a streamer the viewer had watched before
    content_change_rate: float | None  # share of consecutive segments whose product/topic changed
    text_change_rate: float | None  # share of consecutive segments whose text changed
    live_over_time: list[tuple[float, int]] = field(default_factory=list)  # (hour mark, rooms live)
    time_span: tuple[float, float] | None = None
    questions_by_kind: dict[str, int] = field(default_factory=dict)


def world_stats(world: WorldData, buckets: int = 24) -> WorldStats:
    con = duckdb.connect()
    for name in TABLE_NAMES:
        con.register(name, world.table(name))

    def one(sql: str) -> object:
        return con.execute(sql).fetchone()[0]

    by_kind = dict(con.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
    events_by_kind = {k: int(by_kind.get(k, 0)) for k in EVENT_KINDS}
    imp, clk = events_by_kind["impression"], events_by_kind["click"]
    repeat = one(
        "SELECT avg(CASE WHEN n > 1 THEN 1.0 ELSE 0.0 END) FROM ("
        " SELECT row_number() OVER (PARTITION BY e.viewer, r.streamer ORDER BY e.time) AS n"
        " FROM events e JOIN rooms r ON e.room = r.id WHERE e.kind = 'watch')"
    )
    change = con.execute(
        "SELECT avg(CASE WHEN product <> prev_product OR topic <> prev_topic THEN 1.0 ELSE 0.0 END),"
        "       avg(CASE WHEN text <> prev_text THEN 1.0 ELSE 0.0 END) FROM ("
        " SELECT product, topic, text,"
        "  lag(product) OVER w AS prev_product, lag(topic) OVER w AS prev_topic, lag(text) OVER w AS prev_text"
        " FROM segments WINDOW w AS (PARTITION BY room ORDER BY \"index\")) WHERE prev_text IS NOT NULL"
    ).fetchone()
    span = con.execute("SELECT min(start_time), max(end_time) FROM rooms").fetchone()
    live: list[tuple[float, int]] = []
    if span[0] is not None:
        lo, hi = float(span[0]), float(span[1])
        step = max((hi - lo) / buckets, 1.0)
        marks = [lo + i * step for i in range(buckets)]
        for m in marks:
            live.append((m, int(one(f"SELECT count(*) FROM rooms WHERE start_time <= {m} AND {m} < end_time"))))
    questions = dict(con.execute("SELECT kind, count(*) FROM questions GROUP BY kind ORDER BY kind").fetchall())
    con.close()
    return WorldStats(
        tables=world.counts(),
        events_by_kind=events_by_kind,
        ctr=clk / imp if imp else None,
        repeat_ratio=None if repeat is None else float(repeat),
        content_change_rate=None if change[0] is None else float(change[0]),
        text_change_rate=None if change[1] is None else float(change[1]),
        live_over_time=live,
        time_span=None if span[0] is None else (float(span[0]), float(span[1])),
        questions_by_kind={k: int(v) for k, v in questions.items()},
    )
