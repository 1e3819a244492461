"""What stands between a client and the routes: the API key, browsers' cross-site requests, body
sizes, and bounded waits.

The security model (README, "Security"):
- With a key set (`LIVEMIND_API_KEY`), every route but `/healthz`, `/readyz`, `/metrics` and the
  console's page and static files needs `Authorization: Bearer <key>` (OpenAI clients send their
  `api_key` so). `open_reads` leaves the read routes (`/v1/recommend`, `/v1/rooms/live`,
  `/v1/models`, the console's stream) open; writes and the host still need the key.
- Without a key the service binds loopback only, unless the operator names `--insecure-no-key`.
- Every POST needs `Content-Type: application/json`, and a request from a browser page of another
  origin (its `Origin` header is not this server's) is refused: a web page the operator visits
  cannot post a form into the service.
- Every body is capped while it streams, chunked or not: 413 naming the limit.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect

from livemind.serve.api.errors import OpenAIError, livemind_error

PUBLIC = ("/healthz", "/readyz", "/metrics", "/", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)
READS = ("/v1/recommend", "/v1/rooms/live", "/v1/models", "/v1/console/stream")
OPENAI = ("/v1/chat/completions", "/v1/models")


async def _refuse(scope, receive, send, status: int, message: str, field: str | None = None,
                  expected: str | None = None, headers: dict[str, str] | None = None) -> None:
    """Answer with the route's API's error (OpenAI's shape on the OpenAI routes, livemind's elsewhere)."""
    if scope["path"] in OPENAI:
        response = OpenAIError(status, message, param=field).response()
        response.headers.update(headers or {})
    else:
        response = livemind_error(status, message, field=field, expected=expected, headers=headers)
    await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: the key, content type and origin checks, and the body cap (while the body
    streams: a chunked body without a Content-Length is counted as it arrives)."""

    def __init__(self, app, api_key: str | None, open_reads: bool, body_limit: Callable[[str], int],
                 limiters: dict[str, Limiter] | None = None) -> None:
        self.app, self.key, self.open_reads, self.body_limit = app, api_key, open_reads, body_limit
        self.limiters = limiters or {}  # path -> the limiter its requests hold until their reply ends

    def needs_key(self, path: str) -> bool:
        if self.key is None or path in PUBLIC or path.startswith(PUBLIC_PREFIXES):
            return False
        return not (self.open_reads and path in READS)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.needs_key(path):
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.key}".encode()):
                await _refuse(scope, receive, send, 401, "missing or wrong API key", "Authorization",
                              "Authorization: Bearer <LIVEMIND_API_KEY>", {"WWW-Authenticate": "Bearer"})
                return
        if method == "POST":
            origin = headers.get("origin")
            if origin is not None and not same_origin(origin, headers.get("host", "")):
                await _refuse(scope, receive, send, 403, f"a request from another site ({origin[:100]}) is refused",
                              "Origin", "no Origin, or this server's own")
                return
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                await _refuse(scope, receive, send, 415, f"Content-Type {ctype[:100] or '(none)'!r} is refused",
                              "Content-Type", "application/json")
                return
        limit = self.body_limit(path)

        async def too_large() -> None:
            await _refuse(scope, receive, send, 413, f"the body is over the limit of {limit} bytes for {path}", "body",
                          f"at most {limit} bytes")

        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await too_large()
            return
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def sending(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        limiter = self.limiters.get(path)
        try:
            if limiter is None:
                await self.app(scope, counted, sending)
            else:
                with limiter:  # held until the reply (a stream too) ends or the client goes
                    await self.app(scope, counted, sending)
        except Saturated as full:
            await _refuse(scope, receive, send, 503, str(full), None, full.expected, full.headers)
        except ClientDisconnect:  # the client went mid-body: nobody to answer
            return
        except _TooLarge:
            if not started:
                await too_large()


def same_origin(origin: str, host: str) -> bool:
    """Whether a browser's Origin header names this server (the Host the request was sent to).

    >>> same_origin("http://127.0.0.1:8000", "127.0.0.1:8000"), same_origin("https://evil.example", "127.0.0.1:8000")
    (True, False)
    >>> same_origin("null", "127.0.0.1:8000")
    False
    """
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == host.lower()


class Saturated(Exception):
    """A bounded limiter is full: the client is told 503 with Retry-After, nothing waits unbounded."""

    def __init__(self, what: str, limit: int, retry_after_s: int = 1) -> None:
        self.what, self.limit, self.retry_after_s = what, limit, retry_after_s
        self.expected = f"at most {limit} {what} at once"
        self.headers = {"Retry-After": str(retry_after_s)}
        super().__init__(f"the service is at its limit of {limit} {what} at once; retry in {retry_after_s} s")


class Limiter:
    """At most `limit` holders at once, refused (not queued) past it: host requests, read-your-writes
    waits and console streams each have one, so none of them can take the threads or sockets the
    others (and ingest) need. Used from the event loop only (no lock needed)."""

    def __init__(self, what: str, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a limiter of {what} needs a limit of at least 1, got {limit}")
        self.what, self.limit, self.held = what, limit, 0

    def __enter__(self) -> Limiter:
        if self.held >= self.limit:
            raise Saturated(self.what, self.limit)
        self.held += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.held -= 1
