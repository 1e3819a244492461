"""A local OpenAI-compatible chat-completions server for tests (FastAPI + uvicorn in a thread).

It answers deterministically from the last user message and counts requests. Special prompts:
"slow <k>" sleeps 1 s on the first k requests for that prompt; questions in `answers` get that reply; "malformed" returns a reply with
no choices; "broken json" returns a body that is not JSON. With `stream: true` the reply comes as
server-sent chunks of three characters (and a usage chunk when `stream_options.include_usage`).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from livemind.serve.process import free_port


def make_app(state: dict, answers: dict[str, str]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        state["requests"] += 1
        text = body["messages"][-1]["content"]
        state["per_prompt"][text] += 1
        if text.startswith("slow") and state["per_prompt"][text] <= int(text.split()[1]):
            await asyncio.sleep(1.0)
        if text == "malformed":
            return JSONResponse({"id": "x", "object": "chat.completion", "choices": []})
        if text == "broken json":
            return PlainTextResponse("{not json", media_type="application/json")
        answer = answers.get(text.removeprefix("Viewer: "), f"echo: {text} (seed {body.get('seed')})")
        if body.get("stream"):  # server-sent chunks of 3 characters, as a streaming server sends tokens
            return StreamingResponse(_chunks(body, answer), media_type="text/event-stream")
        return JSONResponse({
            "id": "x", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": len(answer.split()), "total_tokens": 3 + len(answer.split())},
        })

    return app


async def _chunks(body: dict, answer: str):
    base = {"id": "x", "object": "chat.completion.chunk", "created": int(time.time()), "model": body["model"]}
    for i in range(0, len(answer), 3):
        delta = {"content": answer[i:i + 3], **({"role": "assistant"} if i == 0 else {})}
        yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}) + "\n\n"
    yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "\n\n"
    if (body.get("stream_options") or {}).get("include_usage"):
        n = len(answer.split())
        yield "data: " + json.dumps({**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": n,
                                                                      "total_tokens": 3 + n}}) + "\n\n"
    yield "data: [DONE]\n\n"


@contextmanager
def openai_server(answers: dict[str, str] | None = None):
    """Yields (base_url, state); state["requests"] counts requests received. `answers` maps a
    viewer question (the last user message without "Viewer: ") to the reply to give."""
    state = {"requests": 0, "per_prompt": Counter()}
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(state, answers or {}), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1", state
    finally:
        server.should_exit = True
        thread.join(timeout=5)
