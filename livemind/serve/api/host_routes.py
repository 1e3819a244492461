"""The host's routes: `/v1/host/ask` (JSON or server-sent events) and the OpenAI-compatible
`/v1/chat/completions` and `/v1/models`.

`/v1/host/ask` builds the prompt from the product on the room's card now (the live state) and the
viewer's earlier turns there; livemind's error shape. The OpenAI routes follow the Chat Completions
API (stream with `[DONE]`, `stream_options.include_usage`, `max_tokens` / `max_completion_tokens`,
`temperature`, `top_p`, `stop`, `seed`, `n`) and answer errors in OpenAI's shape
`{"error": {"message", "type", "param", "code"}}`, so the official `openai` client works unchanged.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from livemind.errors import DataError
from livemind.serve.api.metrics import Metrics
from livemind.serve.api.protocol import AskIn, ChatIn, short, validation_problem
from livemind.serve.host.decoder import ContextTooLong, Penalties
from livemind.serve.host.serving import STOP, Generation, Host, HostBusy


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


def _sse(payload: Any) -> bytes:
    return b"data: " + (payload if isinstance(payload, bytes) else orjson.dumps(payload)) + b"\n\n"


def add_host_routes(app: FastAPI, metrics: Metrics, livemind_error) -> None:
    def observe(gen: Generation, answer_s: float | None) -> None:
        metrics.host_e2e.observe(gen.seconds)
        metrics.recent_host.add(gen.seconds)
        if gen.first_token_s is not None:
            metrics.host_ttft.observe(gen.first_token_s)
        if answer_s is not None:
            metrics.host_answer.observe(answer_s)
        if gen.completion_tokens > 1 and gen.first_token_s is not None:
            metrics.host_tpot.observe((gen.seconds - gen.first_token_s) / (gen.completion_tokens - 1))
        metrics.host_tokens.inc(gen.completion_tokens)

    async def start(host: Host, chat: list[dict[str, str]], gen: Generation, **sampling) -> Iterator[str]:
        """The request's pieces once its first is made; HostBusy when no batch row came free in time."""
        metrics.host_queue.set(host.decoder.waiting + 1)
        try:
            return await run_in_threadpool(host.submit, chat, gen, **sampling)
        finally:
            metrics.host_queue.set(host.decoder.waiting)

    # ------------------------------------------------------------------------------ livemind

    @app.post("/v1/host/ask")
    async def ask(request: Request) -> Response:
        try:
            body = AskIn.model_validate_json(await request.body())
        except ValidationError as exc:
            return livemind_error(exc)
        host = request.app.state.host
        engine = request.app.state.engine
        if host is None or engine is None:
            return JSONResponse({"error": "the host is not ready", "field": None, "value": None, "expected": None,
                                 "index": None}, status_code=503)
        if not body.question.strip():
            return JSONResponse({"error": "question: empty; expected the viewer's text", "field": "question",
                                 "value": body.question, "expected": "a non-empty question", "index": None}, status_code=422)
        try:
            info = engine.state.room_info(body.room)
        except DataError:
            return JSONResponse({"error": f"room {body.room} is unknown", "field": "room", "value": body.room,
                                 "expected": "a room started by a room_start event", "index": None}, status_code=404)
        chat = host.prompt(info["product"], body.room, body.viewer, body.question)
        max_tokens = body.max_tokens or host.cfg.max_tokens
        gen = Generation()
        try:
            pieces = await start(host, chat, gen, max_tokens=max_tokens, stop=STOP)
        except HostBusy as exc:
            return JSONResponse({"error": str(exc), "field": None, "value": None, "expected": None, "index": None},
                                status_code=503)
        except ContextTooLong as exc:
            return JSONResponse({"error": str(exc), "field": "max_tokens", "value": max_tokens,
                                 "expected": "a question and answer budget within the model's context", "index": None},
                                status_code=422)

        def reply(answer_s: float | None) -> dict:
            a = host.answer_of(gen, info["product"])
            host.remember(body.room, body.viewer, body.question, a.answer)
            observe(gen, answer_s)
            return {"room": body.room, "viewer": body.viewer, "product": info["product"], "answer": a.answer,
                    "reasoning": a.reasoning, "finish_reason": gen.finish_reason,
                    "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                              "total_tokens": gen.prompt_tokens + gen.completion_tokens,
                              "cached_prompt_tokens": gen.cached_tokens},
                    "timings": {"ttft_ms": _ms(gen.first_token_s), "answer_ms": _ms(answer_s), "total_ms": _ms(gen.seconds)}}

        if not body.stream:
            text, answer_s = "", None
            async for piece in iterate_in_threadpool(pieces):
                text += piece
                if answer_s is None and _answering(text):
                    answer_s = time.perf_counter() - gen.started
            return Response(orjson.dumps(reply(answer_s)), media_type="application/json")

        async def events():
            text, answer_s = "", None
            async for piece in iterate_in_threadpool(pieces):
                text += piece
                if answer_s is None and _answering(text):
                    answer_s = time.perf_counter() - gen.started
                yield _sse({"delta": piece})
            yield _sse({"done": True, **reply(answer_s)})

        return StreamingResponse(events(), media_type="text/event-stream")

    # ------------------------------------------------------------------------------ OpenAI

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        host = request.app.state.host
        data = [] if host is None else [{"id": host.cfg.name, "object": "model", "created": 0, "owned_by": "livemind"}]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        raw = await request.body()
        try:
            body = ChatIn.model_validate_json(raw)
        except ValidationError as exc:
            problem = validation_problem(exc)
            if problem.field is None:
                return openai_error(400, problem.error)
            return openai_error(400, f"{problem.field}: {problem.expected} (got {short(problem.value)!r})",
                                param=problem.field)
        if (name := body.unsupported()) is not None:
            return openai_error(400, f"{name} is not supported by this server; leave it out (or at its default)",
                                param=name, code="unsupported_parameter")
        host = request.app.state.host
        if host is None:
            return openai_error(503, "the host model is not loaded", kind="server_error")
        if body.model != host.cfg.name:
            return openai_error(404, f"The model `{body.model}` does not exist; this server serves `{host.cfg.name}`",
                                param="model", code="model_not_found")
        stop = body.stops
        top = (body.top_logprobs or 0) if body.logprobs else None
        if body.top_logprobs is not None and not body.logprobs:
            return openai_error(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        if top is not None and not host.decoder.supports_logprobs:
            return openai_error(400, "logprobs are not passed on to the remote host backend", param="logprobs",
                                code="unsupported_parameter")
        penalties = Penalties(body.presence_penalty or 0.0, body.frequency_penalty or 0.0)
        chat = [{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in body.messages]
        max_tokens = body.max_completion_tokens or body.max_tokens or host.cfg.max_tokens
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        base = {"id": rid, "created": created, "model": host.cfg.name}

        def sampling(i: int) -> dict:
            seed = None if body.seed is None else body.seed + i
            return {"max_tokens": max_tokens, "temperature": body.temperature, "top_p": body.top_p, "seed": seed,
                    "stop": stop, "penalties": penalties, "top_logprobs": top}

        shown = [0] * body.n  # per choice: the log-probabilities already sent

        def logprobs(i: int) -> dict | None:
            """The choice's token log-probabilities made since the last call (OpenAI's shape)."""
            if top is None:
                return None
            made = gens[i].logprobs[shown[i]:]
            shown[i] += len(made)
            return {"content": token_logprobs(host.decoder.tok, made)}

        gens = [Generation() for _ in range(body.n)]

        def usage() -> dict:
            done = sum(g.completion_tokens for g in gens)
            return {"prompt_tokens": gens[0].prompt_tokens, "completion_tokens": done,
                    "total_tokens": gens[0].prompt_tokens + done,
                    "prompt_tokens_details": {"cached_tokens": gens[0].cached_tokens}}

        def submit_all() -> list:
            reqs = []
            try:
                for i, g in enumerate(gens):  # decoded together; templating and tokenising off the event loop
                    reqs.append(host.decoder.submit(chat, gen=g, **sampling(i)))
            except BaseException:
                for r in reqs:
                    r.cancelled = True
                raise
            return reqs

        try:
            reqs = await run_in_threadpool(submit_all)
        except ContextTooLong as exc:
            return openai_error(400, str(exc), param="messages", code="context_length_exceeded")
        except HostBusy as exc:
            return openai_error(503, str(exc), kind="server_error", code="overloaded")
        try:
            head = await run_in_threadpool(host.decoder.first, reqs[0])
        except HostBusy as exc:
            for r in reqs[1:]:
                r.cancelled = True
            return openai_error(503, str(exc), kind="server_error", code="overloaded")

        def all_choices() -> Iterator[tuple[int, str]]:
            for i, g in enumerate(gens):
                for piece in head if i == 0 else host.decoder.pieces(reqs[i]):
                    yield i, piece
                observe(g, None)

        pieces = all_choices()
        if not body.stream:
            texts = [""] * body.n
            async for i, piece in iterate_in_threadpool(pieces):
                texts[i] += piece
            choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]},
                        "finish_reason": g.finish_reason, "logprobs": logprobs(i)} for i, g in enumerate(gens)]
            return Response(orjson.dumps({**base, "object": "chat.completion", "choices": choices, "usage": usage()}),
                            media_type="application/json")

        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def events():
            chunk = {**base, "object": "chat.completion.chunk"}
            opened = set()
            last = -1
            async for i, piece in iterate_in_threadpool(pieces):
                if i != last and last >= 0:
                    yield _sse({**chunk, "choices": [{"index": last, "delta": {}, "finish_reason": gens[last].finish_reason,
                                                      "logprobs": logprobs(last)}]})
                last = i
                delta = {"content": piece} if i in opened else {"role": "assistant", "content": piece}
                opened.add(i)
                yield _sse({**chunk, "choices": [{"index": i, "delta": delta, "finish_reason": None,
                                                  "logprobs": logprobs(i)}]})
            for i, g in enumerate(gens):  # choices that made no text, and the last one's end
                if i not in opened:
                    yield _sse({**chunk, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                      "finish_reason": None}]})
                if i not in opened or i == last:
                    yield _sse({**chunk, "choices": [{"index": i, "delta": {}, "finish_reason": g.finish_reason,
                                                      "logprobs": logprobs(i)}]})
            if include_usage:
                yield _sse({**chunk, "choices": [], "usage": usage()})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


def token_logprobs(tok: Any, made: list[tuple[int, float, list[tuple[int, float]]]]) -> list[dict]:
    """OpenAI's `logprobs.content` entries for (token id, log-probability, alternatives) triples."""
    def one(token: int, lp: float) -> dict:
        text = tok.decode([token])
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    return [{**one(t, lp), "top_logprobs": [one(a, alp) for a, alp in alts]} for t, lp, alts in made]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 2)


def _answering(text: str) -> bool:
    """Whether the answer (after the reasoning) has begun in `text` (streamed: the `<think>` tag may
    have arrived only in part, "<" then "think").

    >>> [_answering(t) for t in ("<", "<think", "<think>\\nhm</think>", "<think>\\nhm</think>\\nIt's 9.", "It's")]
    [False, False, False, True, True]
    """
    if "<think>".startswith(text.lstrip()):  # nothing yet, or the reasoning's tag begun
        return False
    if "<think>" in text:
        return "</think>" in text and bool(text.split("</think>", 1)[1].strip())
    return bool(text.strip())
