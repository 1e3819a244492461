"""The wire contract of the live service: requests, responses and errors (pydantic), apart from
the serving logic.

Event models are derived from the world schema's records (`Room`, `Segment`, `Event`, `RoomEnd`),
never hand-copied: a field added to a record appears on the wire. Each event carries a `kind`:
`room_start`, `room_end`, `segment`, or a viewer event kind (impression .. purchase). Types are
strict (a string where a number is expected is refused, not coerced) and unknown fields are refused.

Every number is bounded and finite, on the way in and on the way out: NaN, Infinity and numbers
that overflow a double are refused with the field named (`allow_inf_nan=False`), ids are integers a
JSON double carries exactly (|id| <= 2^53 - 1), times are Unix seconds within +-1e10, amounts at
most 1e9, and every string and list has a length cap (the ranges are in each field's schema, so
`/openapi.json` documents them).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from livemind.rec.tokenizer.content import MAX_TEXT_CHARS
from livemind.serve.host.serving import MAX_QUESTION_CHARS
from livemind.world.live_log import LiveRecord, RoomEnd
from livemind.world.schema import EVENT_KINDS, Event, EventKind, Room, Segment

STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
FINITE = ConfigDict(allow_inf_nan=False)  # replies: a non-finite number is a bug, never sent as null

MAX_ID = 2**53 - 1  # ids (viewer, room, streamer, product, offsets): exact in a JSON double
MAX_TIME = 1e10  # |Unix seconds| (the year 2286)
MAX_VALUE = 1e9  # watch seconds, a gift's or an order's amount
MAX_LABEL_CHARS = 200  # a room title, a segment topic

Id = Annotated[int, Field(ge=-MAX_ID, le=MAX_ID)]
NonNegativeId = Annotated[int, Field(ge=0, le=MAX_ID)]
Time = Annotated[float, Field(ge=-MAX_TIME, le=MAX_TIME)]


def _bounded(name: str, hint: Any) -> Any:
    """A record field's wire type with its range: ids, times, amounts and text lengths."""
    if hint is int:
        return Id
    if hint is float:
        return Annotated[float, Field(ge=-MAX_VALUE, le=MAX_VALUE)] if name == "value" else Time
    if hint is str:
        return Annotated[str, Field(max_length=MAX_TEXT_CHARS if name == "text" else MAX_LABEL_CHARS)]
    return hint


def _derived(name: str, record: type, kind: Any, rename: dict[str, str] | None = None,
             exclude: tuple[str, ...] = ()) -> type[BaseModel]:
    """A strict pydantic model with the record's fields (renamed / left out as asked) and `kind`."""
    rename = rename or {}
    hints = typing.get_type_hints(record)
    fields: dict[str, Any] = {"kind": (kind, ...)}
    for f in dataclasses.fields(record):
        if f.name in exclude or f.name == "kind":
            continue
        hint = _bounded(f.name, hints[f.name])
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
    events: list[LiveEvent]  # type: ignore[valid-type]  # (its count is capped by the engine: 413 past it)
    # the client's id of this batch: a retry with the same id is acknowledged with the first one's offset
    # and stored and applied once (also across a kill -9 between commit and reply)
    batch_id: str | None = Field(None, min_length=1, max_length=128)


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
    model_config = FINITE
    accepted: int  # events stored and applied
    offset: int  # offset of the batch's last event in the durable log


class RecommendIn(BaseModel):
    model_config = STRICT
    viewer: NonNegativeId
    time: Time | None = None  # Unix seconds; None: the latest time the service has seen
    k: int = Field(10, ge=1, le=200)
    policy: Literal["onelive", "popularity"] = "onelive"  # popularity: live rooms by audience (the baseline)
    offset: int | None = Field(None, ge=0, le=MAX_ID)  # answer once the live state has applied events up to this
    # offset (a /v1/events reply's): read-your-writes on a broker replica; waits up to 5 s, else 503


class RoomOut(BaseModel):
    """A room in a reply. A recommendation carries room, streamer, sid, product and score; the live
    list carries room, streamer, sid, product, segment, since and audience: a field a reply does not
    carry is left out (never sent as null)."""

    model_config = FINITE
    room: int
    streamer: int
    sid: list[int] | None
    product: int | None
    segment: int | None = None  # index of the segment shown (the live list only)
    score: float | None = None  # the generator's score (recommendations only)
    since: float | None = None  # when the room went live (the live list only)
    audience: int | None = None  # watches in the last signal window: viewers now (the live list only)


class RecommendOut(BaseModel):
    model_config = FINITE
    viewer: int
    time: float | None
    rooms: list[RoomOut]
    generator: str  # fingerprint of the generator that answered
    cold_start: bool  # the viewer has no watch before `time`


class LiveRoomsOut(BaseModel):
    model_config = FINITE
    time: float | None
    rooms: list[RoomOut]


class ReloadIn(BaseModel):
    model_config = STRICT
    generator: str | None = Field(None, max_length=4096)  # a checkpoint folder; None: reload the configured one


class ErrorOut(BaseModel):
    """Every error of the livemind routes: what is wrong, where, and what was expected."""

    error: str
    field: str | None = None
    value: Any = None
    expected: str | None = None
    index: int | None = None  # position of the bad event in its batch


# ---------------------------------------------------------------------------------------------- the host

class AskIn(BaseModel):
    """A viewer's question in a room. The caller (the platform's backend, holding the key) vouches
    for `viewer`: the host keeps that viewer's recent turns in that room and puts them in the prompt."""

    model_config = STRICT
    room: NonNegativeId
    viewer: NonNegativeId
    question: str = Field(max_length=MAX_QUESTION_CHARS)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=2048)


MAX_MESSAGES = 64  # messages in one chat
MAX_MESSAGE_CHARS = 16_000  # characters of one message ...
MAX_CHAT_CHARS = 32_000  # ... and of all of them (far past any context the student has)
MAX_STOPS, MAX_STOP_CHARS = 4, 64  # stop sequences, as OpenAI allows, each at most this long


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer"]
    content: str = Field(max_length=MAX_MESSAGE_CHARS)
    name: str | None = Field(None, max_length=64)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


Stop = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class ChatIn(BaseModel):
    """An OpenAI Chat Completions request. Implemented: sampling (`temperature`, `top_p`, `seed`,
    `n`, `stop`), `max_tokens` / `max_completion_tokens`, `presence_penalty` and `frequency_penalty`,
    `logprobs` with `top_logprobs`, streaming with `stream_options.include_usage`. Fields that would
    change the answer and are not implemented (`tools`, a `response_format` other than text,
    `logit_bias`) are refused by name (`unsupported`), as vLLM refuses what it cannot do; harmless
    bookkeeping fields (`user`, `store`, `metadata`) are accepted; anything else is refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: str = Field(max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_ID)
    n: int = Field(1, ge=1, le=8)
    user: str | None = Field(None, max_length=256)
    store: bool | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logprobs: bool | None = None  # the answer tokens' log-probabilities ...
    top_logprobs: int | None = Field(None, ge=0, le=20)  # ... with this many likeliest alternatives each
    # accepted in their "off" values only (see `unsupported`)
    tools: list[dict[str, Any]] | None = Field(None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = Field(None, max_length=128)
    function_call: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    logit_bias: dict[str, float] | None = Field(None, max_length=300)

    @field_validator("messages")
    @classmethod
    def _total_characters(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        chars = sum(len(m.content) for m in messages)
        if chars > MAX_CHAT_CHARS:
            raise ValueError(f"the messages hold {chars} characters; at most {MAX_CHAT_CHARS} in all")
        return messages

    def unsupported(self) -> str | None:
        """The first parameter asked for that this server does not implement, None when there is none."""
        off = {"tools": not self.tools, "tool_choice": self.tool_choice in (None, "none"),
               "functions": not self.functions, "function_call": self.function_call in (None, "none"),
               "response_format": self.response_format in (None, {"type": "text"}),
               "logit_bias": not self.logit_bias, "parallel_tool_calls": self.parallel_tool_calls in (None, False)
               or not self.tools}
        return next((name for name, ok in off.items() if not ok), None)

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


# ---------------------------------------------------------------------------------------------- errors

ECHO_CHARS = 200  # an echoed value is cut to this many characters


def short(value: Any, limit: int = ECHO_CHARS) -> Any:
    """A value as an error may echo it: numbers and short strings as they are; long strings cut;
    lists and objects as their (cut) text; a non-finite float as its name.

    >>> short("x" * 300)[-5:], short(list(range(1000)))[:12], short(float("nan")), short(7)
    ('xx...', '[0, 1, 2, 3,', 'nan', 7)
    """
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, list | tuple | dict | set):
        value = repr(value)
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "..."
    return value if value is None or isinstance(value, bool | int | float | str) else short(repr(value), limit)


class Problem(NamedTuple):
    """What a validation error says, in the livemind error shape's terms."""

    status: int
    error: str
    field: str | None = None
    value: Any = None
    expected: str | None = None
    index: int | None = None


def _field_path(loc: tuple) -> list:
    """A pydantic location without the parts that name a union's member ('constrained-str',
    'list[...]', 'function-after[...]'): what the client wrote."""
    return [p for p in loc if p != "body" and not (isinstance(p, str) and ("[" in p or "-" in p))]


def validation_problem(exc: Any) -> Problem:
    """The one problem a client is told of a failed validation (`ValidationError` or FastAPI's
    `RequestValidationError`): malformed JSON (400), or the first bad field with its value (cut) and
    what was expected (422). Of a union's several complaints, the one past a type mismatch."""
    errors = exc.errors()
    err = next((e for e in errors if not e["type"].endswith("_type")), errors[0])
    if err["type"] == "json_invalid":
        return Problem(400, f"the body is not valid JSON: {err.get('ctx', {}).get('error', err['msg'])}",
                       expected="a JSON object")
    loc = _field_path(err["loc"])
    index, field = None, ".".join(str(p) for p in loc) or None
    if loc[:1] == ["events"] and len(loc) >= 2 and isinstance(loc[1], int):  # events, i, kind tag, field...
        index, field = loc[1], ".".join(str(p) for p in loc[3:]) or None
    if err["type"] == "union_tag_invalid":
        field, value, expected = "kind", err["ctx"]["tag"], "one of " + err["ctx"]["expected_tags"]
    elif err["type"] == "missing":
        value, expected = None, "a value (the field is required)"
    elif err["type"] == "finite_number":
        value, expected = err.get("input"), "a finite number (NaN and Infinity are refused)"
    else:
        value, expected = err.get("input"), err["msg"]
    where = f"event {index}: " if index is not None else ""
    return Problem(422, f"{where}{field}: {short(err['msg'])}", field, short(value), expected, index)


def declare_bodies(app: Any, bodies: dict[str, type[BaseModel]]) -> None:
    """Put each route's request model into the app's OpenAPI schema (routes that read and validate
    their body themselves, for speed and for their own error shape, declare nothing to FastAPI), so
    that `/openapi.json` promises what the routes accept; clients and fuzzers read it."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for path, model in bodies.items():
            defs = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(defs.pop("$defs", {}))
            components[model.__name__] = defs
            schema["paths"][path]["post"]["requestBody"] = {
                "required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
