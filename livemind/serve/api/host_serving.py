"""Serving the host over HTTP, apart from the routes (as vLLM keeps `serving_chat` apart from its
`api_server`): `HostServing.ask` for `/v1/host/ask` and `HostServing.chat` for the OpenAI-compatible
`/v1/chat/completions`. Each owns its request's validation past the schema, the prompt, submission
to the decoder, streaming (server-sent events), cancellation, the `n` choices and the timings.

`/v1/host/ask` builds the prompt from the product on the room's card now (the live state) and the
viewer's earlier turns there, and works out the host's calculations (`[[...]]`, livemind.think.calc)
before the viewer sees them, streamed or whole; `/v1/chat/completions` returns the model's own text.
The chat follows the Chat Completions API: `stream` with `[DONE]` and
`stream_options.include_usage`, `max_tokens` / `max_completion_tokens`, `temperature`, `top_p`,
`stop`, `seed`, `n`, presence and frequency penalties, `logprobs` with `top_logprobs`.
Errors are `ServiceError` (livemind's shape) and `OpenAIError` (OpenAI's), answered by their handlers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from livemind.errors import DataError
from livemind.serve.api.errors import OpenAIError, ServiceError
from livemind.serve.api.metrics import Metrics
from livemind.serve.api.protocol import AskIn, ChatIn
from livemind.serve.host.decoder import ContextTooLong, Penalties
from livemind.serve.host.serving import STOP, Generation, Host, HostBusy
from livemind.think.calc import CalcStream


def sse(payload: Any) -> bytes:
    """One server-sent event carrying JSON."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


class AnswerTimer:
    """When the answer (after the reasoning) began, from the pieces streamed so far."""

    def __init__(self, gen: Generation) -> None:
        self.gen, self.text, self.answer_s = gen, "", None

    def see(self, piece: str) -> None:
        self.text += piece
        if self.answer_s is None and answering(self.text):
            self.answer_s = time.perf_counter() - self.gen.started


class HostServing:
    """The host's two HTTP entry points over one `Host` (given per request: it loads after start-up)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def observe(self, gen: Generation, answer_s: float | None) -> None:
        m = self.metrics
        m.host_e2e.observe(gen.seconds)
        m.recent_host.add(gen.seconds)
        if gen.first_token_s is not None:
            m.host_ttft.observe(gen.first_token_s)
        if answer_s is not None:
            m.host_answer.observe(answer_s)
        if gen.completion_tokens > 1 and gen.first_token_s is not None:
            m.host_tpot.observe((gen.seconds - gen.first_token_s) / (gen.completion_tokens - 1))
        m.host_tokens.inc(gen.completion_tokens)

    # ------------------------------------------------------------------------------ /v1/host/ask

    async def ask(self, host: Host | None, engine: Any, body: AskIn) -> Response:
        if host is None or engine is None:
            raise ServiceError(503, "the host is not ready")
        if not body.question.strip():
            raise ServiceError(422, "question: empty; expected the viewer's text", field="question",
                               value=body.question, expected="a non-empty question")
        try:
            product = engine.state.room_info(body.room)["product"]
        except DataError:
            raise ServiceError(404, f"room {body.room} is unknown", field="room", value=body.room,
                               expected="a room started by a room_start event") from None
        chat = host.prompt(product, body.room, body.viewer, body.question)
        max_tokens = body.max_tokens or host.cfg.max_tokens
        gen = Generation()
        self.metrics.host_queue.set(host.decoder.waiting + 1)
        try:  # the pieces once the first is made: a 503 can still be sent before the response starts
            pieces = await run_in_threadpool(host.submit, chat, gen, max_tokens=max_tokens, stop=STOP,
                                            repeats=True)  # the host's stops, as its offline evaluation
        except HostBusy as exc:
            raise ServiceError(503, str(exc), headers={"Retry-After": "1"}) from None
        except ContextTooLong as exc:
            raise ServiceError(422, str(exc), field="max_tokens", value=max_tokens,
                               expected="a question and answer budget within the model's context") from None
        finally:
            self.metrics.host_queue.set(host.decoder.waiting)
        timer = AnswerTimer(gen)

        def reply() -> dict:
            a = host.answer_of(gen, product)
            host.remember(body.room, body.viewer, body.question, a.answer)
            self.observe(gen, timer.answer_s)
            return {"room": body.room, "viewer": body.viewer, "product": product, "answer": a.answer,
                    "reasoning": a.reasoning, "finish_reason": gen.finish_reason,
                    "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                              "total_tokens": gen.prompt_tokens + gen.completion_tokens,
                              "cached_prompt_tokens": gen.cached_tokens},
                    "timings": {"ttft_ms": _ms(gen.first_token_s), "answer_ms": _ms(timer.answer_s),
                                "total_ms": _ms(gen.seconds)}}

        async def deltas() -> AsyncIterator[bytes]:
            calc = CalcStream()  # a calculation is sent as its value once its "]]" arrives
            async for piece in iterate_in_threadpool(pieces):
                timer.see(piece)
                if text := calc.feed(piece):
                    yield sse({"delta": text})
            if text := calc.flush():
                yield sse({"delta": text})

        if not body.stream:
            async for _ in deltas():  # the whole answer, then the reply
                pass
            return _json(reply())

        async def events() -> AsyncIterator[bytes]:
            async for event in deltas():
                yield event
            yield sse({"done": True, **reply()})

        return StreamingResponse(events(), media_type="text/event-stream")

    # ------------------------------------------------------------------------------ /v1/chat/completions

    async def chat(self, host: Host | None, body: ChatIn) -> Response:
        if (name := body.unsupported()) is not None:
            raise OpenAIError(400, f"{name} is not supported by this server; leave it out (or at its default)",
                              param=name, code="unsupported_parameter")
        if host is None:
            raise OpenAIError(503, "the host model is not loaded")
        if body.model != host.cfg.name:
            raise OpenAIError(404, f"The model `{body.model}` does not exist; this server serves `{host.cfg.name}`",
                              param="model", code="model_not_found")
        if body.top_logprobs is not None and not body.logprobs:
            raise OpenAIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        if body.logprobs and not host.decoder.supports_logprobs:
            raise OpenAIError(400, "logprobs are not passed on to the remote host backend", param="logprobs",
                              code="unsupported_parameter")
        completion = Completion(host, body, self.observe)
        await completion.start()
        if not body.stream:
            return _json(await completion.whole())
        return StreamingResponse(completion.chunks(), media_type="text/event-stream")


class Completion:
    """One chat completion: its `n` choices decoded together, then sent whole or as chunks."""

    def __init__(self, host: Host, body: ChatIn, observe) -> None:
        self.host, self.body, self.observe = host, body, observe
        self.top = (body.top_logprobs or 0) if body.logprobs else None
        self.gens = [Generation() for _ in range(body.n)]
        self.shown = [0] * body.n  # per choice: the log-probabilities already sent
        self.base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": host.cfg.name}
        self.reqs: list = []
        self.head: Iterator[str] = iter(())

    def sampling(self, i: int) -> dict:
        b = self.body
        return {"max_tokens": b.max_completion_tokens or b.max_tokens or self.host.cfg.max_tokens,
                "temperature": b.temperature, "top_p": b.top_p, "seed": None if b.seed is None else b.seed + i,
                "stop": b.stops, "penalties": Penalties(b.presence_penalty or 0.0, b.frequency_penalty or 0.0),
                "top_logprobs": self.top}

    def _submit(self) -> list:
        chat = [{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in self.body.messages]
        reqs = []
        try:  # the choices are decoded together; templating and tokenising happen here, off the event loop
            for i, g in enumerate(self.gens):
                reqs.append(self.host.decoder.submit(chat, gen=g, **self.sampling(i)))
        except BaseException:
            for r in reqs:
                r.cancelled = True
            raise
        return reqs

    async def start(self) -> None:
        """Submit every choice and wait for the first piece (a 503 can still be sent before any chunk)."""
        try:
            self.reqs = await run_in_threadpool(self._submit)
            self.head = await run_in_threadpool(self.host.decoder.first, self.reqs[0])
        except ContextTooLong as exc:
            raise OpenAIError(400, str(exc), param="messages", code="context_length_exceeded") from None
        except HostBusy as exc:
            for r in self.reqs:
                r.cancelled = True
            raise OpenAIError(503, str(exc), code="overloaded") from None

    def pieces(self) -> Iterator[tuple[int, str]]:
        """(choice, piece) of every choice in turn (a consumer gone early cancels what is left)."""
        for i, g in enumerate(self.gens):
            for piece in self.head if i == 0 else self.host.decoder.pieces(self.reqs[i]):
                yield i, piece
            self.observe(g, None)

    def logprobs(self, i: int) -> dict | None:
        """The choice's token log-probabilities made since the last call (OpenAI's shape)."""
        if self.top is None:
            return None
        made = self.gens[i].logprobs[self.shown[i]:]
        self.shown[i] += len(made)
        return {"content": token_logprobs(self.host.decoder.tok, made)}

    def usage(self) -> dict:
        first, done = self.gens[0], sum(g.completion_tokens for g in self.gens)
        return {"prompt_tokens": first.prompt_tokens, "completion_tokens": done,
                "total_tokens": first.prompt_tokens + done, "prompt_tokens_details": {"cached_tokens": first.cached_tokens}}

    async def whole(self) -> dict:
        texts = [""] * self.body.n
        async for i, piece in iterate_in_threadpool(self.pieces()):
            texts[i] += piece
        choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]}, "finish_reason": g.finish_reason,
                    "logprobs": self.logprobs(i)} for i, g in enumerate(self.gens)]
        return {**self.base, "object": "chat.completion", "choices": choices, "usage": self.usage()}

    async def chunks(self) -> AsyncIterator[bytes]:
        chunk = {**self.base, "object": "chat.completion.chunk"}

        def one(i: int, delta: dict, finish: str | None) -> bytes:
            return sse({**chunk, "choices": [{"index": i, "delta": delta, "finish_reason": finish,
                                              "logprobs": self.logprobs(i)}]})

        opened, last = set(), -1
        async for i, piece in iterate_in_threadpool(self.pieces()):
            if i != last and last >= 0:  # the previous choice is done
                yield one(last, {}, self.gens[last].finish_reason)
            last = i
            yield one(i, {"content": piece} if i in opened else {"role": "assistant", "content": piece}, None)
            opened.add(i)
        for i, g in enumerate(self.gens):  # choices that made no text, and the last one's end
            if i not in opened:
                yield one(i, {"role": "assistant", "content": ""}, None)
            if i not in opened or i == last:
                yield one(i, {}, g.finish_reason)
        if self.body.stream_options and self.body.stream_options.include_usage:
            yield sse({**chunk, "choices": [], "usage": self.usage()})
        yield b"data: [DONE]\n\n"


def token_logprobs(tok: Any, made: list[tuple[int, float, list[tuple[int, float]]]]) -> list[dict]:
    """OpenAI's `logprobs.content` entries for (token id, log-probability, alternatives) triples."""
    def one(token: int, lp: float) -> dict:
        text = tok.decode([token])
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    return [{**one(t, lp), "top_logprobs": [one(a, alp) for a, alp in alts]} for t, lp, alts in made]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 2)


def answering(text: str) -> bool:
    """Whether the answer (after the reasoning) has begun in `text` (streamed: the `<think>` tag may
    have arrived only in part, "<" then "think").

    >>> [answering(t) for t in ("<", "<think", "<think>\\nhm</think>", "<think>\\nhm</think>\\nIt's 9.", "It's")]
    [False, False, False, True, True]
    """
    if "<think>".startswith(text.lstrip()):  # nothing yet, or the reasoning's tag begun
        return False
    if "<think>" in text:
        return "</think>" in text and bool(text.split("</think>", 1)[1].strip())
    return bool(text.strip())
