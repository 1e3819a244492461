"""`livemind serve`: one FastAPI app over the live engine.

Routes are thin: parse, call one method of the engine, shape the reply. Startup loads the models
and rebuilds the live state from the durable log in a background thread, so `/healthz` answers at
once and `/readyz` says 503 until the state is ready. Errors have one shape on these routes,
`{"error", "field", "value", "expected", "index"}`, from one set of handlers. Keys, origins,
content types and body caps are `livemind.serve.api.guard`'s (its docstring is the security model).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from livemind.errors import LivemindError
from livemind.rec.live.state import BatchError
from livemind.serve.api.console import add_console_routes
from livemind.serve.api.errors import ServiceError, livemind_error
from livemind.serve.api.guard import Guard, Limiter, Saturated
from livemind.serve.api.host_routes import add_host_routes
from livemind.serve.api.metrics import Metrics
from livemind.serve.api.protocol import (
    Accepted,
    AskIn,
    ChatIn,
    EventBatchIn,
    LiveRoomsOut,
    RecommendIn,
    RecommendOut,
    ReloadIn,
    declare_bodies,
    to_record,
)
from livemind.serve.host.serving import Host, HostConfig, load_host
from livemind.serve.rec.batching import Batcher
from livemind.serve.rec.engine import ApplyFailed, EngineConfig, RecEngine, RecRequest
from livemind.serve.scale.errors import BrokerError
from livemind.world.schema import Segment

log = logging.getLogger("livemind.serve")
LOOP_PARSE_BYTES = 64 * 1024  # bodies up to this size are parsed on the event loop (well under a millisecond)


@dataclass(frozen=True)
class ServeConfig:
    engine: EngineConfig
    api_key: str | None = None  # LIVEMIND_API_KEY: needed on every route but health, readiness, metrics, the console page
    max_batch: int = 32  # recommendation requests per forward pass
    # how long a request that finds the model idle waits for others; 0: none, and the requests that queue
    # while a pass runs share the next one (a wait at low rates only added latency: docs/history.md)
    max_wait_ms: float = 0.0
    max_body_bytes: int = 16 * 1024 * 1024  # an event batch
    max_request_bytes: int = 1024 * 1024  # any other body (a chat's messages are capped at 32k characters)
    open_reads: bool = False  # with a key: leave the read routes (recommend, live rooms, models, console) open
    # bounded at once, each on its own limiter (past it: 503 with Retry-After), so that none of them can
    # take the worker threads that ingest and recommend need
    max_host_requests: int = 16  # host answers being decoded or waiting for a batch row
    max_waits: int = 8  # read-your-writes waits (/v1/recommend with an offset)
    max_streams: int = 32  # console streams (server-sent events)
    host: HostConfig | None = None  # the live host (/v1/host/ask, /v1/chat/completions), with ...
    catalog: Path | None = None  # ... the products it answers about: a world folder (its products table)


class Observe:
    """ASGI middleware: per-route request counts (by status) and latency into the metrics."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            name = route.path if route is not None else "unmatched"
            self.metrics.requests.labels(name, str(status[0])).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - started)


def create_app(cfg: ServeConfig, engine: RecEngine | None = None, host: Host | None = None) -> FastAPI:
    """The app; `engine` / `host` given: serve them as they are (tests), else load them from `cfg` at startup."""
    metrics = Metrics()
    app = FastAPI(title="livemind", version="0.1", lifespan=_lifespan(cfg, metrics, engine, host))
    add_error_handlers(app)
    host_work = Limiter("host requests", cfg.max_host_requests)
    app.add_middleware(Guard, api_key=cfg.api_key, open_reads=cfg.open_reads,
                       body_limit=lambda path: cfg.max_body_bytes if path == "/v1/events" else cfg.max_request_bytes,
                       limiters={"/v1/host/ask": host_work, "/v1/chat/completions": host_work,
                                 "/v1/console/stream": Limiter("console streams", cfg.max_streams)})
    app.add_middleware(Observe, metrics=metrics)  # outermost: refusals are counted too
    add_health_routes(app, metrics)
    add_rec_routes(app, cfg, metrics)
    add_host_routes(app, metrics)
    add_console_routes(app, metrics)
    declare_bodies(app, {"/v1/events": EventBatchIn, "/v1/recommend": RecommendIn, "/v1/admin/reload": ReloadIn,
                         "/v1/host/ask": AskIn, "/v1/chat/completions": ChatIn})
    return app


def _lifespan(cfg: ServeConfig, metrics: Metrics, engine: RecEngine | None, host: Host | None):
    """Start-up loads the models and rebuilds the live state in a thread (/readyz says 503 until then);
    shut-down closes the batcher, the engine and a host this app loaded."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine, app.state.host, app.state.load_error = None, None, None
        app.state.batcher = Batcher(lambda reqs: app.state.engine.recommend_many(reqs), cfg.max_batch,
                                    cfg.max_wait_ms / 1000, metrics.batch.observe)

        def load() -> None:
            try:
                eng = engine or RecEngine(cfg.engine)
                started = time.perf_counter()
                n = eng.open()
                log.info("live state rebuilt from %d logged events in %.1f s", n, time.perf_counter() - started)
                gc.collect()
                gc.freeze()  # the models and the rebuilt state are long-lived: later collections skip them
                if cfg.host is not None:
                    app.state.host = host or load_host(cfg.host, cfg.catalog)
                app.state.engine = eng
            except Exception as exc:  # shown by /readyz; the process stays up for the operator to see it
                log.exception("loading failed")
                app.state.load_error = f"{type(exc).__name__}: {exc}"

        threading.Thread(target=load, name="livemind-load", daemon=True).start()
        yield
        await app.state.batcher.close()
        if app.state.engine is not None:
            app.state.engine.close()
        if host is None and app.state.host is not None:  # a host handed in by the caller is the caller's to close
            app.state.host.decoder.close()

    return lifespan


def add_error_handlers(app: FastAPI) -> None:
    """One handler per error type, each answering in livemind's shape (OpenAI's: `host_routes`)."""

    @app.exception_handler(Saturated)
    async def saturated(_: Request, exc: Saturated) -> JSONResponse:
        return livemind_error(503, str(exc), expected=exc.expected, headers=exc.headers)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return ServiceError.invalid(exc).response()

    @app.exception_handler(BatchError)
    async def batch_error(_: Request, exc: BatchError) -> JSONResponse:
        return livemind_error(422, str(exc), field=exc.field, value=exc.value, expected=exc.expected, index=exc.index)

    @app.exception_handler(BrokerError)
    async def broker_error(_: Request, exc: BrokerError) -> JSONResponse:
        return livemind_error(503, str(exc), expected="a reachable broker (redis-server)")

    @app.exception_handler(ApplyFailed)
    async def apply_failed(_: Request, exc: ApplyFailed) -> JSONResponse:
        return livemind_error(503, f"the service stopped serving: {exc}", expected="a restart of the service")

    @app.exception_handler(LivemindError)
    async def refused(_: Request, exc: LivemindError) -> JSONResponse:
        return livemind_error(400, str(exc))


def add_health_routes(app: FastAPI, metrics: Metrics) -> None:
    """`/healthz`, `/readyz` and `/metrics`: open with a key too."""

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        # "retry": false where only a restart (after a fix) can make it ready, so a waiting caller stops at once
        eng, load_error = request.app.state.engine, request.app.state.load_error
        if load_error is not None:
            return livemind_error(503, "not ready: " + load_error, retry=False)
        if eng is None:
            return livemind_error(503, "not ready: loading models and the live state", retry=True)
        if eng.apply_error is not None:
            return livemind_error(503, "not ready: " + eng.apply_error, retry=False)
        if eng.follower is not None and eng.follower.error:
            return livemind_error(503, "not ready: the replica stopped following the broker's applied log: " + eng.follower.error,
                                  retry=False)
        host = request.app.state.host
        return JSONResponse({"ready": True, "generator": eng.served.fingerprint if eng.served else None,
                             **eng.state.counts(), "offset": eng.applied_offset,
                             "broker": eng.cfg.broker,
                             "host": None if host is None else host.cfg.name})

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        eng = request.app.state.engine
        if eng is not None:
            counts = eng.state.counts()
            metrics.live_rooms.set(counts["live_rooms"])
            # segments the live state has taken a new SID for (on a broker replica, the workers' SIDs)
            metrics.catch_up(metrics.reencodes, counts["reencodes"])
        if request.app.state.host is not None:
            decoder = request.app.state.host.decoder
            metrics.host_queue.set(decoder.waiting)
            metrics.host_batch.set(decoder.running)
            metrics.catch_up(metrics.host_drafted, decoder.drafted)
            metrics.catch_up(metrics.host_accepted, decoder.accepted)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def engine_of(request: Request) -> RecEngine:
    """The live engine, or a 503 saying why the service is not ready."""
    eng = request.app.state.engine
    if eng is None:
        error = request.app.state.load_error
        raise ServiceError(503, "the service is not ready: " + (error or "loading models and the live state"))
    if eng.apply_error is not None:
        raise ServiceError(503, "the service is not ready: " + eng.apply_error)
    return eng


def add_rec_routes(app: FastAPI, cfg: ServeConfig, metrics: Metrics) -> None:
    """Ingest (`/v1/events`), recommendations (`/v1/recommend`), the live rooms and the model swap."""
    waits = Limiter("read-your-writes waits", cfg.max_waits)

    @app.post("/v1/events", response_model=Accepted)
    async def events(request: Request) -> Accepted:
        eng = engine_of(request)
        body = await request.body()  # at most max_body_bytes (the Guard counts it as it streams)

        def parse() -> tuple[EventBatchIn, list]:
            batch = EventBatchIn.model_validate_json(body)
            if len(batch.events) > cfg.engine.max_events:
                raise ServiceError(413, f"a batch of {len(batch.events)} events is too large", field="events",
                                   value=len(batch.events), expected=f"at most {cfg.engine.max_events} events per batch")
            return batch, [to_record(e) for e in batch.events]

        try:  # a large batch is parsed off the event loop (10,000 events take tens of ms)
            batch, records = parse() if len(body) < LOOP_PARSE_BYTES else await run_in_threadpool(parse)
        except ValidationError as exc:
            raise ServiceError.invalid(exc) from None
        host = request.app.state.host

        def ingest() -> tuple[int, int]:
            out = eng.ingest(records, batch.batch_id)
            if host is not None:  # cards just put up: their prompt prefix is prefilled before the first question
                for product in {r.product: None for r in records if isinstance(r, Segment)}:
                    host.warm(int(product))
            return out

        n, offset = await run_in_threadpool(ingest)
        metrics.events.inc(n)
        return Accepted(accepted=n, offset=offset)

    @app.post("/v1/recommend", response_model=RecommendOut)
    async def recommend(request: Request) -> Response:
        try:
            body = RecommendIn.model_validate_json(await request.body())
        except ValidationError as exc:
            raise ServiceError.invalid(exc) from None
        eng = engine_of(request)
        if body.offset is not None and body.offset > eng.applied_offset:
            if body.offset > (acked := eng.acknowledged_offset):  # never given out: no wait would see it
                raise ServiceError(422, f"offset {body.offset} was never acknowledged", field="offset",
                                   value=body.offset, expected=f"an offset from a /v1/events reply (at most {acked} now)")
            with waits:
                applied = await run_in_threadpool(eng.wait_applied, body.offset, 5.0)
            if not applied:
                raise ServiceError(503, f"the live state has applied events up to {eng.applied_offset}, not yet up "
                                        f"to offset {body.offset} (a broker replica waits up to 5 s)", field="offset",
                                   value=body.offset, expected="a retry in a second", headers={"Retry-After": "1"})
        t0 = time.perf_counter()
        if body.policy == "popularity":
            answer = await run_in_threadpool(eng.popular, RecRequest(body.viewer, body.time, body.k))
        else:
            answer = await request.app.state.batcher.submit(RecRequest(body.viewer, body.time, body.k))
        metrics.recent_recommend.add(time.perf_counter() - t0)
        # checked against the declared schema (finite numbers included): what /openapi.json promises is sent
        return Response(RecommendOut.model_validate(answer).model_dump_json(exclude_unset=True), media_type="application/json")

    @app.get("/v1/rooms/live", response_model=LiveRoomsOut)
    async def rooms_live(request: Request) -> Response:
        return Response(LiveRoomsOut.model_validate(engine_of(request).live_rooms()).model_dump_json(exclude_unset=True),
                        media_type="application/json")

    @app.post("/v1/admin/reload")
    async def reload(request: Request) -> dict:
        raw = await request.body()
        try:
            body = ReloadIn.model_validate_json(raw or b"{}")
        except ValidationError as exc:
            raise ServiceError.invalid(exc) from None
        eng = engine_of(request)
        try:
            served = await run_in_threadpool(eng.reload, body.generator)
        except LivemindError:
            metrics.reloads.labels("failed").inc()
            raise
        metrics.reloads.labels("swapped").inc()
        return {"generator": served.path, "fingerprint": served.fingerprint, "seconds": round(eng.last_reload_s, 3)}
