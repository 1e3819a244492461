"""The host's routes, thin: `/v1/host/ask` (JSON or server-sent events) and the OpenAI-compatible
`/v1/chat/completions` and `/v1/models`. Each parses its body (`protocol`) and hands it to
`HostServing` (`host_serving`); errors are raised as `ServiceError` / `OpenAIError` and answered by
their handlers in livemind's and OpenAI's shapes, so the official `openai` client works unchanged.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError

from livemind.serve.api.errors import OpenAIError, ServiceError
from livemind.serve.api.host_serving import HostServing
from livemind.serve.api.metrics import Metrics
from livemind.serve.api.protocol import AskIn, ChatIn


def add_host_routes(app: FastAPI, metrics: Metrics) -> None:
    serving = HostServing(metrics)

    @app.exception_handler(OpenAIError)
    async def openai_error(_: Request, exc: OpenAIError) -> Response:
        return exc.response()

    @app.post("/v1/host/ask")
    async def ask(request: Request) -> Response:
        try:
            body = AskIn.model_validate_json(await request.body())
        except ValidationError as exc:
            raise ServiceError.invalid(exc) from None
        return await serving.ask(request.app.state.host, request.app.state.engine, body)

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        host = request.app.state.host
        data = [] if host is None else [{"id": host.cfg.name, "object": "model", "created": 0, "owned_by": "livemind"}]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            body = ChatIn.model_validate_json(await request.body())
        except ValidationError as exc:
            raise OpenAIError.invalid(exc) from None
        return await serving.chat(request.app.state.host, body)
