"""`livemind replay`: stream a recorded world to a running service as a live platform would, and ask
for recommendations just before held-out watches arrive.

The world becomes one time-ordered stream of live records: a room starts at its start time, each
segment is shown at its start time, viewers act at their event times, a room ends at its end time.
At equal times the order is room_start, room_end, segment, viewer events, so that a request at t
sees what the offline evaluation sees at t (rooms live on [start, end), the segment shown at t,
viewer activity strictly before t). A target is a watch in [start, until) of a room showing a
segment; just before it is sent, the replay asks `/v1/recommend` for its viewer at its time.

Pacing: events before `start` go as fast as the service takes them (warm-up); from `start` on, at
`speed` x real time (0: as fast as possible).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import orjson

from livemind.errors import DataError
from livemind.world.live_log import LiveRecord, RoomEnd, kind_of
from livemind.world.schema import EVENT_KINDS, Event, EventKind, Room, Segment
from livemind.world.tables import WorldData

_ORDER = {"room_start": 0, "room_end": 1, "segment": 2}  # viewer events: 3
WATCH = EVENT_KINDS.index("watch")


def wire(r: LiveRecord) -> dict:
    """The JSON body of one record on `/v1/events`."""
    kind = kind_of(r)
    if isinstance(r, Room):
        return {"kind": kind, "room": r.id, "streamer": r.streamer, "start_time": r.start_time, "title": r.title}
    if isinstance(r, RoomEnd):
        return {"kind": kind, "room": r.room, "time": r.time}
    if isinstance(r, Segment):
        return {"kind": kind, "room": r.room, "index": r.index, "start_time": r.start_time, "text": r.text,
                "product": r.product, "topic": r.topic}
    return {"kind": kind, "viewer": r.viewer, "room": r.room, "time": r.time, "value": r.value}


def world_stream(world: WorldData, until: float | None = None) -> Iterator[tuple[float, int, LiveRecord]]:
    """(time, order, record) of every live record of a world before `until`, in stream order."""
    end = math.inf if until is None else until
    rooms = world.rooms.to_pylist()
    structural: list[tuple[float, int, int, LiveRecord]] = []
    for r in rooms:
        if r["start_time"] < end:
            structural.append((r["start_time"], 0, r["id"], Room(r["id"], r["streamer"], r["start_time"], math.inf,
                                                                 r["title"])))
        if r["end_time"] < end:
            structural.append((r["end_time"], 1, r["id"], RoomEnd(r["id"], r["end_time"])))
    seg = world.segments
    st = seg.column("start_time").to_numpy()
    keep = np.flatnonzero(st < end)
    cols = {c: seg.column(c).to_pylist() for c in ("room", "index", "text", "product", "topic")}
    for i in keep:
        structural.append((float(st[i]), 2, int(cols["index"][i]),
                           Segment(cols["room"][i], cols["index"][i], float(st[i]), cols["text"][i], cols["product"][i],
                                   cols["topic"][i])))
    structural.sort(key=lambda x: (x[0], x[1], x[2]))
    ev = world.event_batch()
    order = np.argsort(ev.time, kind="stable")
    order = order[ev.time[order] < end]
    kinds = [EventKind(k) for k in EVENT_KINDS]

    def viewer_events() -> Iterator[tuple[float, int, LiveRecord]]:
        for j in order:
            yield (float(ev.time[j]), 3, Event(int(ev.viewer[j]), int(ev.room[j]), float(ev.time[j]),
                                                kinds[ev.kind[j]], float(ev.value[j])))

    yield from heapq.merge(((t, o, r) for t, o, _, r in structural), viewer_events(), key=lambda x: (x[0], x[1]))


def watch_targets(world: WorldData, start: float, until: float, n: int | None, seed: int = 0) -> set[tuple[int, float]]:
    """(viewer, time) of the watches in [start, until) on a room showing a segment, a seeded sample of n."""
    from livemind.rec.data.segments import SegmentFrame  # the offline evaluation's notion of a target

    ev = world.event_batch()
    sel = np.flatnonzero((ev.kind == WATCH) & (ev.time >= start) & (ev.time < until))
    seg = SegmentFrame.from_world(world).lookup(ev.room[sel], ev.time[sel])
    sel = sel[seg >= 0]
    pairs = sorted({(int(ev.viewer[j]), float(ev.time[j])) for j in sel})  # several watches at once: one request
    if n is not None and n < len(pairs):
        pairs = [pairs[j] for j in np.sort(np.random.default_rng(seed).choice(len(pairs), n, replace=False))]
    return set(pairs)


@dataclass
class ReplayResult:
    events: int = 0
    requests: int = 0
    hits: dict[str, list[bool]] = field(default_factory=lambda: {"all": [], "new": [], "repeat": []})
    latency_ms: list[float] = field(default_factory=list)
    ingest_ms: list[float] = field(default_factory=list)  # per batch
    seconds: float = 0.0
    answers: list[dict] = field(default_factory=list)  # every recommendation, for parity checks

    def summary(self) -> dict[str, float]:
        lat = np.array(self.latency_ms) if self.latency_ms else np.array([math.nan])
        out = {"events": self.events, "requests": self.requests, "seconds": round(self.seconds, 2),
               "events_per_s": round(self.events / self.seconds, 1) if self.seconds else math.nan,
               "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
               "p99_ms": float(np.percentile(lat, 99))}
        for split, h in self.hits.items():
            out[f"hr10_{split}"] = float(np.mean(h)) if h else math.nan
            out[f"n_{split}"] = len(h)
        return out


def replay(world: WorldData, url: str, start: float, until: float, speed: float = 0.0, batch: int = 500,
           targets: set[tuple[int, float]] | None = None, k: int = 10, api_key: str | None = None,
           progress: Callable[[int, int], None] | None = None, client: httpx.Client | None = None,
           on_request: Callable[[dict, dict], None] | None = None) -> ReplayResult:
    """Send every record before `until` to the service at `url`; recommend before each target watch."""
    if until <= start:
        raise DataError(f"until ({until}) must be after start ({start})")
    targets = watch_targets(world, start, until, None) if targets is None else targets
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    http = client or httpx.Client(base_url=url, timeout=60.0, headers=headers)
    res = ReplayResult()
    pending: list[dict] = []
    asked: set[tuple[int, float]] = set()  # one request per (viewer, time), however many watches share it
    seen: dict[int, set[int]] = {}  # viewer -> streamers watched (new vs repeat)
    streamer_of = dict(zip(world.rooms.column("id").to_pylist(), world.rooms.column("streamer").to_pylist()))
    total, done = len(targets), 0
    begin = wall0 = time.perf_counter()
    t_first: float | None = None

    def flush() -> None:
        if not pending:
            return
        t0 = time.perf_counter()
        r = http.post("/v1/events", content=orjson.dumps({"events": pending}),
                      headers={**headers, "content-type": "application/json"})
        if r.status_code != 200:
            raise DataError(f"the service refused a batch: HTTP {r.status_code} {r.text[:300]}")
        res.ingest_ms.append(1000 * (time.perf_counter() - t0))
        res.events += len(pending)
        pending.clear()

    for t, order, rec in world_stream(world, until):
        if t >= start and speed > 0:  # pace the live part
            if t_first is None:
                t_first, wall0 = t, time.perf_counter()
            ahead = (t - t_first) / speed - (time.perf_counter() - wall0)
            if ahead > 0.005:
                flush()
                time.sleep(ahead)
        if order == 3 and rec.kind == EventKind.WATCH and (rec.viewer, rec.time) in targets \
                and (rec.viewer, rec.time) not in asked:
            asked.add((rec.viewer, rec.time))
            flush()
            t0 = time.perf_counter()
            r = http.post("/v1/recommend", json={"viewer": rec.viewer, "time": rec.time, "k": k})
            res.latency_ms.append(1000 * (time.perf_counter() - t0))
            if r.status_code != 200:
                raise DataError(f"/v1/recommend failed: HTTP {r.status_code} {r.text[:300]}")
            answer = r.json()
            rooms = [x["room"] for x in answer["rooms"]]
            hit = rec.room in rooms[:k]
            split = "repeat" if streamer_of[rec.room] in seen.get(rec.viewer, ()) else "new"
            res.hits["all"].append(hit)
            res.hits[split].append(hit)
            res.answers.append({"viewer": rec.viewer, "time": rec.time, "room": rec.room, "rooms": rooms})
            if on_request:
                on_request(answer, res.answers[-1])
            res.requests += 1
            done += 1
            if progress:
                progress(done, total)
        pending.append(wire(rec))
        if order == 3 and rec.kind == EventKind.WATCH:
            seen.setdefault(rec.viewer, set()).add(streamer_of[rec.room])
        if len(pending) >= batch:
            flush()
    flush()
    res.seconds = time.perf_counter() - begin
    return res
