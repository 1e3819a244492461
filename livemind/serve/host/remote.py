"""The host's generation on another server: an OpenAI-compatible endpoint (vLLM on a GPU).

`livemind serve --host-backend openai --host-url http://gpu:8001/v1 --host-model STUDENT` keeps the
host's prompt building, viewer turns, routes and metrics here and sends the chat to the upstream
server, streaming its tokens back as they come. vLLM batches continuously and caches prefixes
(`--enable-prefix-caching`) on its side, so this class only bounds how many requests are in flight
(`max_batch`) and refuses one that cannot start within `max_wait_s` (`HostBusy`, HTTP 503), like
`BatchDecoder` does for the local model. It has `BatchDecoder`'s interface (`submit`, `pieces`,
`first`, `stream`, `waiting`, `running`, `close`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from livemind.errors import ConfigError, need
from livemind.serve.host.decoder import NO_PENALTIES, DecodeRequest, Generation, HostBusy, Penalties, Streams


class RemoteDecoder(Streams):
    """Chats streamed from an OpenAI-compatible server (see the module docstring)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, max_batch: int = 64,
                 max_wait_s: float = 5.0, timeout: float = 60.0) -> None:
        openai = need("openai", "openai", "the remote host backend (--host-backend openai)")

        if max_batch < 1 or max_wait_s <= 0 or timeout <= 0:
            raise ConfigError(f"max_batch >= 1, max_wait_s > 0 and timeout > 0 expected, got {max_batch}, "
                              f"{max_wait_s}, {timeout}")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"--host-url must be an http(s) URL of an OpenAI-compatible API, got {base_url!r}")
        self.model, self.max_wait_s = model, max_wait_s
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=0)
        self._slots = threading.Semaphore(max_batch)
        self._lock = threading.Lock()
        self._waiting = self._running = 0
        self.lm = None

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def running(self) -> int:
        return self._running

    supports_logprobs = False  # not passed on to the upstream server: asked for, it is a 400

    def submit(self, chat: Sequence[dict[str, str]], max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
               seed: int | None = None, stop: Sequence[str] = (), gen: Generation | None = None,
               penalties: Penalties = NO_PENALTIES, top_logprobs: int | None = None,
               repeats: bool = False) -> DecodeRequest:
        gen = gen if gen is not None else Generation()
        req = DecodeRequest(None, chat, max_tokens, temperature, top_p, seed, stop, gen, penalties, repeats=repeats)
        with self._lock:
            self._waiting += 1
        threading.Thread(target=self._run, args=(req,), name="livemind-host-remote", daemon=True).start()
        return req

    def _run(self, req: DecodeRequest) -> None:
        got = self._slots.acquire(timeout=self.max_wait_s)
        with self._lock:
            self._waiting -= 1
            self._running += got
        if not got:
            req.finish(HostBusy(f"the host is busy: no generation slot within {self.max_wait_s:g} s"))
            return
        gen = req.gen
        try:
            chunks = self.client.chat.completions.create(
                model=self.model, messages=list(req.chat), max_tokens=req.max_tokens, temperature=req.temperature,
                top_p=req.top_p, seed=None if req.seed is None else req.seed, stop=req.stop or None, stream=True,
                presence_penalty=req.penalties.presence, frequency_penalty=req.penalties.frequency,
                stream_options={"include_usage": True})
            for chunk in chunks:
                if req.cancelled:
                    chunks.close()
                    break
                if chunk.usage is not None:
                    gen.prompt_tokens, gen.completion_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                    details = getattr(chunk.usage, "prompt_tokens_details", None)
                    gen.cached_tokens = int(getattr(details, "cached_tokens", 0) or 0)
                stopped = False
                for choice in chunk.choices:
                    piece = choice.delta.content or ""
                    if piece and req.take(gen.text + piece):  # a sentence said again: the host stops here
                        stopped = True
                        break
                    if choice.finish_reason:
                        gen.finish_reason = choice.finish_reason
                if stopped:
                    chunks.close()
                    break
            req.finish()
        except Exception as exc:  # the upstream failed: the request ends with its error, the service stays up
            req.finish(RuntimeError(f"the upstream host at {self.client.base_url} failed: {type(exc).__name__}: {exc}"))
        finally:
            self._slots.release()
            with self._lock:
                self._running -= 1

    def close(self) -> None:
        self.client.close()
