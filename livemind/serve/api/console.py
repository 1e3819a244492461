"""The live console: one self-contained page at `/` (HTML, CSS and JS shipped in
`livemind/serve/api/static`, no CDN, no build step) and the server-sent events that keep it live.

`GET /v1/console/stream` sends, once a second, the rooms live now (streamer, product on the card
with its name when the host's catalog has it, SID, audience) and a strip of the service's own
figures: events/s ingested, `/v1/recommend` and host latency p50/p99 over the last minute, live
rooms, host requests decoding and waiting. The page itself calls the public API as any client
would: `/v1/recommend` (OneLive and `policy: popularity`) and `/v1/host/ask` with `stream: true`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from livemind.serve.api.metrics import Metrics

STATIC = Path(__file__).resolve().parent / "static"


def console_frame(app: FastAPI, metrics: Metrics, last: tuple[float, int]) -> tuple[dict, tuple[float, int]]:
    """One update of the console: the live rooms and the figures strip (events/s since `last`)."""
    eng, host = app.state.engine, app.state.host
    now = time.monotonic()
    events = eng.state.events if eng is not None else 0
    rate = (events - last[1]) / (now - last[0]) if now > last[0] else 0.0
    live = eng.live_rooms() if eng is not None else {"time": None, "rooms": []}
    catalog = host.catalog if host is not None else {}
    for r in live["rooms"]:
        p = catalog.get(r["product"]) if r["product"] is not None else None
        r["product_name"] = p.name if p is not None else None
    rec, ask = metrics.recent_recommend.summary(), metrics.recent_host.summary()
    stats = {"events_per_s": round(rate, 1), "events": events, "live_rooms": len(live["rooms"]),
             "recommend_p50_ms": _ms(rec["p50"]), "recommend_p99_ms": _ms(rec["p99"]), "recommend_n": rec["n"],
             "host_p50_ms": _ms(ask["p50"]), "host_p99_ms": _ms(ask["p99"]), "host_n": ask["n"],
             "host_running": host.decoder.running if host is not None else None,
             "host_waiting": host.decoder.waiting if host is not None else None,
             "recommender": eng is not None and eng.served is not None, "host": host is not None}
    return {"time": live["time"], "rooms": live["rooms"], "stats": stats}, (now, events)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


def add_console_routes(app: FastAPI, metrics: Metrics, period_s: float = 1.0) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    shared = {"at": -1.0, "data": b"", "last": (time.monotonic(), 0)}  # the latest frame, for every stream
    lock = asyncio.Lock()

    async def latest() -> bytes:
        """The frame of this period: made once however many consoles are open (each would otherwise
        cost the live state a walk a second), then sent to all of them."""
        async with lock:
            if time.monotonic() - shared["at"] >= period_s * 0.9:
                frame, shared["last"] = await run_in_threadpool(console_frame, app, metrics, shared["last"])
                shared["data"], shared["at"] = b"data: " + orjson.dumps(frame) + b"\n\n", time.monotonic()
            return shared["data"]

    @app.get("/v1/console/stream")
    async def stream(request: Request) -> StreamingResponse:
        async def frames():
            while not await request.is_disconnected():
                yield await latest()
                await asyncio.sleep(period_s)

        return StreamingResponse(frames(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
