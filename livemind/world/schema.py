"""Typed records of the live world, and their columnar (Arrow) form.

One record type per concept (Streamer, Room, Segment, Product, Viewer, Event, Question). Bulk data
travels as Arrow tables whose schemas are derived from these dataclasses, so the simulator, the
loaders, the DuckDB store and Parquet files all agree on one set of columns. Events, the bulk of
any world, also have a numpy form (`EventBatch`) for vectorised code.

Times are float seconds since the Unix epoch everywhere (loaders convert milliseconds and
10-minute steps). A room is live on the half-open interval [start_time, end_time).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from livemind.errors import DataError


class EventKind(StrEnum):
    """What a viewer did. The order fixes the int8 codes used in `EventBatch.kind`."""

    IMPRESSION = "impression"
    CLICK = "click"
    WATCH = "watch"  # value: seconds watched
    LIKE = "like"
    COMMENT = "comment"
    SHARE = "share"
    FOLLOW = "follow"
    GIFT = "gift"  # value: gift amount
    PURCHASE = "purchase"  # value: order amount

    @property
    def code(self) -> int:
        return EVENT_KINDS.index(self.value)


EVENT_KINDS: tuple[str, ...] = tuple(k.value for k in EventKind)


def kind_code(name: str) -> int:
    """int8 code of an event kind name; unknown names are a DataError naming the valid ones."""
    try:
        return EVENT_KINDS.index(name)
    except ValueError:
        raise DataError(f"unknown event kind {name!r}; expected one of {list(EVENT_KINDS)}") from None


@dataclass(frozen=True, slots=True)
class Streamer:
    id: int
    name: str
    category: str  # main content category ("" when a dataset does not say)
    popularity: float = 1.0  # relative audience size, 1.0 = average


@dataclass(frozen=True, slots=True)
class Room:
    """One live session of a streamer."""

    id: int
    streamer: int
    start_time: float
    end_time: float
    title: str = ""

    def is_live(self, t: float) -> bool:
        return self.start_time <= t < self.end_time


@dataclass(frozen=True, slots=True)
class Segment:
    """About 30 s of a room: what is said and which product is on the card."""

    room: int
    index: int  # position within the room, 0-based
    start_time: float
    text: str  # title + transcript snippet
    product: int = -1  # product on the card, -1 when the host is just chatting
    topic: str = ""  # content category of the segment (a product category, or "chat")


@dataclass(frozen=True, slots=True)
class Product:
    """Structured product facts: everything a host may be asked about."""

    id: int
    streamer: int
    name: str
    category: str
    price: float  # list price of one unit
    discount_pct: float  # live-room discount on the list price
    coupon_threshold: float  # spend at least this (after discounts) ...
    coupon_amount: float  # ... and this much is taken off
    bundle_qty: int  # buy at least this many ...
    bundle_pct: float  # ... and the subtotal gets this percent off
    sizes: tuple[str, ...]
    materials: tuple[str, ...]
    specs: dict[str, str]
    stock: int
    ship_days: int  # days until dispatch
    ship_fee: float
    free_ship_threshold: float  # orders at or above this ship free
    return_days: int  # 0 = no returns

    def quote(self, qty: int) -> dict[str, float]:
        """Price of `qty` units: discount, then bundle, then coupon, then shipping.

        >>> p = Product(0, 0, "x", "home", 100.0, 10.0, 150.0, 20.0, 2, 5.0, (), (), {}, 9, 1, 8.0, 200.0, 7)
        >>> p.quote(2)  # 2 x 90 = 180, -5% = 171, coupon -20 = 151, below 200 so +8 shipping
        {'unit_price': 90.0, 'subtotal': 171.0, 'coupon': 20.0, 'goods_total': 151.0, 'shipping': 8.0, 'total': 159.0}
        """
        if qty < 1:
            raise DataError(f"quantity must be at least 1, got {qty}")
        unit = round(self.price * (1 - self.discount_pct / 100), 2)
        subtotal = unit * qty
        if qty >= self.bundle_qty:
            subtotal *= 1 - self.bundle_pct / 100
        subtotal = round(subtotal, 2)
        coupon = self.coupon_amount if subtotal >= self.coupon_threshold else 0.0
        goods = round(subtotal - coupon, 2)
        shipping = 0.0 if goods >= self.free_ship_threshold else self.ship_fee
        return {
            "unit_price": unit,
            "subtotal": subtotal,
            "coupon": coupon,
            "goods_total": goods,
            "shipping": shipping,
            "total": round(goods + shipping, 2),
        }


@dataclass(frozen=True, slots=True)
class Viewer:
    id: int
    home_hour: float = math.nan  # hour of day (0-24) of peak activity
    visits_per_day: float = math.nan
    taste_category: str = ""  # the category the viewer likes most


@dataclass(frozen=True, slots=True)
class Event:
    viewer: int
    room: int
    time: float
    kind: EventKind
    value: float = 0.0  # watch seconds, gift amount or order amount; 0 otherwise


@dataclass(frozen=True, slots=True)
class Question:
    """A viewer's chat question about the product on the card, with gold facts for judging."""

    id: int
    viewer: int
    room: int
    time: float
    product: int
    kind: str  # price | bundle | stock | shipping | returns | material | size | spec
    text: str
    gold: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Arrow schemas derived from the dataclasses

R = TypeVar("R")

_ARROW_TYPES: dict[Any, pa.DataType] = {
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    tuple[str, ...]: pa.list_(pa.string()),
}


def _arrow_type(hint: Any) -> pa.DataType:
    if hint in _ARROW_TYPES:
        return _ARROW_TYPES[hint]
    if hint is EventKind:
        return pa.string()
    if typing.get_origin(hint) is dict:
        return pa.string()  # JSON text: keeps Parquet and DuckDB schemas flat
    raise TypeError(f"no Arrow type for {hint!r}")


def arrow_schema(cls: type) -> pa.Schema:
    """Arrow schema with one column per dataclass field, in field order."""
    hints = typing.get_type_hints(cls)
    return pa.schema([(f.name, _arrow_type(hints[f.name])) for f in dataclasses.fields(cls)])


SCHEMAS: dict[str, pa.Schema] = {
    "streamers": arrow_schema(Streamer),
    "rooms": arrow_schema(Room),
    "segments": arrow_schema(Segment),
    "products": arrow_schema(Product),
    "viewers": arrow_schema(Viewer),
    "events": arrow_schema(Event),
    "questions": arrow_schema(Question),
}
RECORD_TYPES: dict[str, type] = {
    "streamers": Streamer,
    "rooms": Room,
    "segments": Segment,
    "products": Product,
    "viewers": Viewer,
    "events": Event,
    "questions": Question,
}


def _to_cell(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


def records_to_table(records: typing.Iterable[Any], cls: type) -> pa.Table:
    """Records of one dataclass type -> Arrow table with `arrow_schema(cls)`."""
    names = [f.name for f in dataclasses.fields(cls)]
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for rec in records:
        for n in names:
            columns[n].append(_to_cell(getattr(rec, n)))
    return pa.table(columns, schema=arrow_schema(cls))


def table_to_records(table: pa.Table, cls: type[R]) -> list[R]:
    """Arrow table -> records, decoding JSON dict columns, lists and enums."""
    hints = typing.get_type_hints(cls)
    decoders: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        hint = hints[f.name]
        if typing.get_origin(hint) is dict:
            decoders[f.name] = json.loads
        elif hint == tuple[str, ...]:
            decoders[f.name] = tuple
        elif hint is EventKind:
            decoders[f.name] = EventKind
    out = []
    for row in table.to_pylist():
        for name, dec in decoders.items():
            row[name] = dec(row[name])
        out.append(cls(**row))
    return out


def empty_table(name: str) -> pa.Table:
    return SCHEMAS[name].empty_table()


# ---------------------------------------------------------------------------------------------
# Events in columnar numpy form


@dataclass
class EventBatch:
    """Events as parallel arrays (the form the simulator and models use).

    viewer: int64 [N]; room: int64 [N]; time: float64 [N] seconds; kind: int8 [N] codes into
    EVENT_KINDS; value: float64 [N].
    """

    viewer: np.ndarray
    room: np.ndarray
    time: np.ndarray
    kind: np.ndarray
    value: np.ndarray

    def __post_init__(self) -> None:
        self.viewer = np.asarray(self.viewer, dtype=np.int64)
        self.room = np.asarray(self.room, dtype=np.int64)
        self.time = np.asarray(self.time, dtype=np.float64)
        self.kind = np.asarray(self.kind, dtype=np.int8)
        self.value = np.asarray(self.value, dtype=np.float64)
        n = len(self.viewer)
        for name in ("room", "time", "kind", "value"):
            if len(getattr(self, name)) != n:
                raise DataError(f"EventBatch column {name!r} has {len(getattr(self, name))} rows, expected {n}")
        bad = np.flatnonzero((self.kind < 0) | (self.kind >= len(EVENT_KINDS)))
        if len(bad):
            raise DataError(f"event row {bad[0]}: kind code {self.kind[bad[0]]} is not in 0..{len(EVENT_KINDS) - 1}")
        bad = np.flatnonzero(~np.isfinite(self.time))
        if len(bad):
            raise DataError(f"event row {bad[0]}: time {float(self.time[bad[0]])} is not a finite number of seconds")

    def __len__(self) -> int:
        return len(self.viewer)

    @classmethod
    def empty(cls) -> EventBatch:
        z = np.zeros(0)
        return cls(z, z, z, z, z)

    @classmethod
    def concat(cls, batches: typing.Sequence[EventBatch]) -> EventBatch:
        if not batches:
            return cls.empty()
        return cls(*(np.concatenate([getattr(b, c) for b in batches]) for c in ("viewer", "room", "time", "kind", "value")))

    @classmethod
    def from_records(cls, events: typing.Iterable[Event]) -> EventBatch:
        rows = [(e.viewer, e.room, e.time, EventKind(e.kind).code, e.value) for e in events]
        if not rows:
            return cls.empty()
        v, r, t, k, x = zip(*rows)
        return cls(np.array(v), np.array(r), np.array(t), np.array(k), np.array(x))

    def records(self) -> list[Event]:
        kinds = [EventKind(k) for k in EVENT_KINDS]
        return [
            Event(int(v), int(r), float(t), kinds[k], float(x))
            for v, r, t, k, x in zip(self.viewer, self.room, self.time, self.kind, self.value)
        ]

    def take(self, index: np.ndarray) -> EventBatch:
        return EventBatch(self.viewer[index], self.room[index], self.time[index], self.kind[index], self.value[index])

    def sorted_by_time(self) -> EventBatch:
        return self.take(np.argsort(self.time, kind="stable"))

    def to_arrow(self) -> pa.Table:
        names = np.array(EVENT_KINDS, dtype=object)
        return pa.table(
            {
                "viewer": self.viewer,
                "room": self.room,
                "time": self.time,
                "kind": pa.array(names[self.kind], type=pa.string()),
                "value": self.value,
            },
            schema=SCHEMAS["events"],
        )

    @classmethod
    def from_arrow(cls, table: pa.Table) -> EventBatch:
        kinds = table.column("kind").to_pylist()
        lookup = {k: i for i, k in enumerate(EVENT_KINDS)}
        codes = np.empty(len(kinds), dtype=np.int8)
        for i, k in enumerate(kinds):
            code = lookup.get(k)
            if code is None:
                raise DataError(f"event row {i}: unknown event kind {k!r}; expected one of {list(EVENT_KINDS)}")
            codes[i] = code
        return cls(
            table.column("viewer").to_numpy(zero_copy_only=False),
            table.column("room").to_numpy(zero_copy_only=False),
            table.column("time").to_numpy(zero_copy_only=False),
            codes,
            table.column("value").to_numpy(zero_copy_only=False),
        )
