"""The wire contract of the live service: requests, responses and errors (pydantic), apart from
the serving logic.

Event models are derived from the world schema's records (`Room`, `Segment`, `Event`, `RoomEnd`),
never hand-copied: a field added to a record appears on the wire. Each event carries a `kind`:
`room_start`, `room_end`, `segment`, or a viewer event kind (impression .. purchase). Types are
strict (a string where a number is expected is refused, not coerced) and unknown fields are refused.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from livemind.world.live_log import LiveRecord, RoomEnd
from livemind.world.schema import EVENT_KINDS, Event, EventKind, Room, Segment

STRICT = ConfigDict(strict=True, extra="forbid")


def _derived(name: str, record: type, kind: Any, rename: dict[str, str] | None = None,
             exclude: tuple[str, ...] = ()) -> type[BaseModel]:
    """A strict pydantic model with the record's fields (renamed / left out as asked) and `kind`."""
    rename = rename or {}
    hints = typing.get_type_hints(record)
    fields: dict[str, Any] = {"kind": (kind, ...)}
    for f in dataclasses.fields(record):
        if f.name in exclude or f.name == "kind":
            continue
        hint = float if hints[f.name] is float else hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else ...
        fields[rename.get(f.name, f.name)] = (hint, default)
    return create_model(name, __config__=STRICT, **fields)


RoomStartEvent = _derived("RoomStartEvent", Room, Literal["room_start"], rename={"id": "room"}, exclude=("end_time",))
RoomEndEvent = _derived("RoomEndEvent", RoomEnd, Literal["room_end"])
SegmentEvent = _derived("SegmentEvent", Segment, Literal["segment"])
ViewerEvent = _derived("ViewerEvent", Event, Literal[EVENT_KINDS])  # type: ignore[valid-type]

LiveEvent = Annotated[RoomStartEvent | RoomEndEvent | SegmentEvent | ViewerEvent,  # type: ignore[valid-type]
                      Field(discriminator="kind")]


class EventBatchIn(BaseModel):
    model_config = STRICT
    events: list[LiveEvent]  # type: ignore[valid-type]


def to_record(e: BaseModel) -> LiveRecord:
    """The world record of a validated wire event."""
    d = e.model_dump()
    kind = d.pop("kind")
    if kind == "room_start":
        return Room(d.pop("room"), end_time=math.inf, **d)
    if kind == "room_end":
        return RoomEnd(**d)
    if kind == "segment":
        return Segment(**d)
    return Event(kind=EventKind(kind), **d)


class Accepted(BaseModel):
    accepted: int  # events stored and applied
    offset: int  # offset of the batch's last event in the durable log


class RecommendIn(BaseModel):
    model_config = STRICT
    viewer: int = Field(ge=0)
    time: float | None = None  # Unix seconds; None: the latest time the service has seen
    k: int = Field(10, ge=1, le=200)
    policy: Literal["onelive", "popularity"] = "onelive"  # popularity: live rooms by audience (the baseline)
    offset: int | None = Field(None, ge=0)  # answer once the live state has applied events up to this
    # offset (a /v1/events reply's): read-your-writes on a broker replica; waits up to 5 s, else 503


class RoomOut(BaseModel):
    room: int
    streamer: int
    sid: list[int] | None
    product: int | None
    segment: int | None = None  # index of the segment shown (the live list only)
    score: float | None = None  # the generator's score (recommendations only)
    since: float | None = None  # when the room went live (the live list only)
    audience: int | None = None  # watches in the last signal window: viewers now (the live list only)


class RecommendOut(BaseModel):
    viewer: int
    time: float | None
    rooms: list[RoomOut]
    generator: str  # fingerprint of the generator that answered
    cold_start: bool  # the viewer has no watch before `time`


class LiveRoomsOut(BaseModel):
    time: float | None
    rooms: list[RoomOut]


class ReloadIn(BaseModel):
    model_config = STRICT
    generator: str | None = None  # a checkpoint folder; None: reload the configured one


class ErrorOut(BaseModel):
    """Every error of the livemind routes: what is wrong, where, and what was expected."""

    error: str
    field: str | None = None
    value: Any = None
    expected: str | None = None
    index: int | None = None  # position of the bad event in its batch
