"""Continuous batching for the live host: every admitted request advances one token per step.

Design (what vLLM's scheduler does, in plain PyTorch over a Hugging Face causal LM):
- One loop thread owns the model, on every core (`own_threads`), through a runner
  (`livemind.serve.host.forward`: livemind's own forward for Llama students, transformers' for the
  rest) that writes keys and values into the decoder's preallocated buffers
  (layers, rows, kv heads, columns, head dim): nothing is concatenated per step.
- A request is *admitted* when a batch row is free: its prompt is prefilled in one pass (batch 1)
  straight into a free row, right-aligned with the running rows (left padding masked out; a longer
  prompt shifts the window right, a full buffer grows by `KV_HEADROOM` columns), after the longest
  prefix whose keys and values are cached: the room's card when it was seen before, else the head
  every card shares (the host's rules, cached on its own once two cards have shown it). A new
  card's columns are copied out of the row into the cache from the same pass.
- Each step picks one token per row from that row's logits (greedy at temperature 0, else
  temperature + top-p with the request's own seeded generator), ends the rows that stopped, and
  runs one forward for the rest: tokens (B, 1) at each row's own position, the mask over the
  window. Decoding reads the weights once per step whatever B is (it is memory-bound), so B
  viewers cost about what one does.
- A greedy row decoding alone (the common case on a quiet CPU) speculates: its step runs the
  picked token and up to `speculate` draft tokens copied from where its last tokens occurred before
  (prompt lookup: answers repeat the card's names, prices and facts), and keeps the drafts the
  step's own logits pick too, so the text is greedy decoding's (to the rounding of a pass over
  several tokens) and a pass over the weights (what bounds batch-1 decoding) can yield several
  tokens. A rejected draft's columns are written over.
- `warm(system)` prefills a system message (a room's card) into the prefix cache ahead of its
  first question, when the decoder is idle and at most once per `warm_interval_s`: the service
  calls it when a segment puts a product on a card, so the first viewer to ask finds the card's
  KV ready. Only the newest `WARM_QUEUE` cards wait; a burst (a replay) does not flood the CPU.
- A request that waits more than `max_wait_s` for a row is refused (`HostBusy`, HTTP 503) rather
  than queued forever; a consumer that goes away cancels its row.
- Text is streamed piece by piece as whole characters; stop strings are cut and never streamed
  half-made; `finish_reason` is "stop" (end-of-turn token or stop string) or "length".
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from livemind.errors import ConfigError
from livemind.serve.host.forward import FastLlama, HFRunner, runner_for
from livemind.serve.host.threads import own_threads
from livemind.think.prompts import repeat_cut, repeat_pending


class HostBusy(Exception):
    """No batch row within the configured wait."""


class ContextTooLong(ConfigError):
    """The prompt and its answer budget do not fit the model's context."""


@dataclass
class Generation:
    """What one generation made: the text so far, and its counts and timings."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    started: float = field(default_factory=time.perf_counter)
    first_token_s: float | None = None  # from the start to the first token
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    seconds: float = 0.0
    batch: int = 0  # the largest batch this request decoded in
    # asked with top_logprobs: per answer token (token id, its log-probability, [(id, log-prob)] of the
    # `top_logprobs` likeliest), from the logits the token was picked from (penalties in, temperature out)
    logprobs: list[tuple[int, float, list[tuple[int, float]]]] | None = None


LOGPROB_FLOOR = -9999.0  # a log-probability of -inf is reported as this (as OpenAI does): numbers stay numbers


@dataclass(frozen=True)
class Penalties:
    """OpenAI's presence and frequency penalties: a token already in the answer has its logit
    lowered by `presence` once plus `frequency` per time it appeared (both in [-2, 2])."""

    presence: float = 0.0
    frequency: float = 0.0

    def __post_init__(self) -> None:
        for name in ("presence", "frequency"):
            v = getattr(self, name)
            if not (math.isfinite(v) and -2.0 <= v <= 2.0):
                raise ConfigError(f"{name} penalty must be a number in [-2, 2], got {v}")

    def __bool__(self) -> bool:
        return bool(self.presence or self.frequency)


NO_PENALTIES = Penalties()


def _held_back(text: str, stop: Sequence[str]) -> int:
    """How many trailing characters of `text` could begin a stop string (not streamed yet)."""
    return max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


_END = object()  # the last item of a request's piece queue
MAX_TOP_LOGPROBS = 20  # alternatives a token's log-probabilities may list (OpenAI's limit)
WARM_QUEUE = 8  # cards waiting to be prefilled ahead of their first question (the newest are kept)
KV_HEADROOM = 128  # free key/value columns allocated past the batch's window (a reallocation copies)
MAX_DRAFTS = KV_HEADROOM // 2  # prompt-lookup draft tokens a step may check (they must fit the headroom)
SHARED_MIN = 16  # tokens: a head two cached cards share (the host's rules) is cached on its own from this long


class DecodeRequest:
    """One request's sampling settings, the tokens it made and the text it has streamed."""

    def __init__(self, ids: torch.Tensor | None, chat: Sequence[dict[str, str]], max_tokens: int, temperature: float,
                 top_p: float, seed: int | None, stop: Sequence[str], gen: Generation,
                 penalties: Penalties = NO_PENALTIES, top_logprobs: int | None = None, repeats: bool = False) -> None:
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ConfigError(f"temperature >= 0 and 0 < top_p <= 1 expected, got {temperature}, {top_p}")
        if top_logprobs is not None and not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise ConfigError(f"top_logprobs must be 0 to {MAX_TOP_LOGPROBS}, got {top_logprobs}")
        self.penalties, self.top_logprobs = penalties, top_logprobs
        self.counts: dict[int, int] = {}  # answer token -> times made (for the penalties)
        self._scored: tuple[float, list[tuple[int, float]]] | None = None  # the last pick's log-probabilities
        if top_logprobs is not None:
            gen.logprobs = []
        self.ids, self.chat, self.max_tokens = ids, chat, max_tokens  # ids: (1, L), None for a remote host
        self.temperature, self.top_p, self.stop, self.gen = temperature, top_p, [s for s in stop if s], gen
        self.seed, self.repeats = seed, repeats  # repeats: stop where a sentence is said again (repeat_cut)
        self.rng = torch.Generator()  # sampling runs on the CPU: the same draws on every device
        if seed is not None:
            self.rng.manual_seed(int(seed))
        self.made: list[int] = []
        self.prompt: list[int] = [] if ids is None else ids[0].tolist()  # its tokens (prefix cache, drafts)
        self.sent = ""
        self.pieces: queue.Queue = queue.Queue()
        self.queued = time.perf_counter()
        self.cancelled = False
        self.done = False

    @property
    def plain(self) -> bool:
        """Greedy with nothing but the logits deciding: prompt-lookup drafts may be checked for it."""
        return self.temperature <= 0 and not self.penalties and self.top_logprobs is None

    def pick(self, logits: torch.Tensor) -> int:
        """The next token from this row's logits (V,), after the penalties; with `top_logprobs`, the
        token's log-probability and the likeliest alternatives are kept for `push`."""
        if self.penalties and self.counts:
            logits = logits.float().clone()
            ids = torch.tensor(list(self.counts), device=logits.device)
            n = torch.tensor(list(self.counts.values()), dtype=torch.float32, device=logits.device)
            logits[ids] -= self.penalties.presence + self.penalties.frequency * n
        if self.temperature <= 0:
            token = int(torch.argmax(logits))
        else:
            probs = torch.softmax(logits.float() / self.temperature, -1)
            if self.top_p < 1.0:
                p, idx = torch.sort(probs, descending=True)
                keep = torch.cumsum(p, -1) - p < self.top_p  # the smallest set whose mass reaches top_p
                probs = torch.zeros_like(probs).scatter(0, idx[keep], p[keep])
            token = int(torch.multinomial(probs.cpu(), 1, generator=self.rng))
        if self.top_logprobs is not None:
            lp = torch.log_softmax(logits.float(), -1).clamp(min=LOGPROB_FLOOR).cpu()
            top = torch.topk(lp, self.top_logprobs) if self.top_logprobs else None
            self._scored = (float(lp[token]), [] if top is None else
                            [(int(i), float(v)) for v, i in zip(top.values, top.indices)])
        return token

    def push(self, token: int, stop_ids: set[int], tok: Any) -> bool:
        """Take one token; stream what became final; True when the request is done."""
        gen = self.gen
        if token in stop_ids:
            gen.finish_reason = "stop"
            return self.finish()
        self.made.append(token)
        self.counts[token] = self.counts.get(token, 0) + 1
        if gen.logprobs is not None and self._scored is not None:
            gen.logprobs.append((token, *self._scored))
        gen.completion_tokens = len(self.made)
        if self.take(tok.decode(self.made, skip_special_tokens=True)):
            return True
        if len(self.made) >= self.max_tokens:
            gen.finish_reason = "length"
            return self.finish()
        return False

    def take(self, final: str) -> bool:
        """The whole text decoded so far: cut at a stop (a stop string; with `repeats`, a sentence said
        again), stream what became final, True when a stop ended the request."""
        gen = self.gen
        cut = min((final.find(s) for s in self.stop if s in final), default=-1)
        if cut >= 0:
            final, gen.finish_reason = final[:cut], "stop"
        if self.repeats and (again := repeat_cut(final, complete=False)) is not None:
            final, gen.finish_reason = final[:again], "stop"
        if gen.first_token_s is None:
            gen.first_token_s = time.perf_counter() - gen.started
        gen.text = final
        held = 0 if gen.finish_reason else max(_held_back(final, self.stop), repeat_pending(final) if self.repeats else 0)
        safe = len(final) - held
        if safe > len(self.sent) and not final[:safe].endswith("\ufffd"):  # whole characters, no partial stop
            self.pieces.put(final[len(self.sent):safe])
            self.sent = final[:safe]
        return self.finish() if gen.finish_reason else False

    def finish(self, error: Exception | None = None) -> bool:
        if self.done:
            return True
        self.done, gen = True, self.gen
        if error is None and self.repeats and (again := repeat_cut(gen.text)) is not None:  # the last sentence ended
            gen.text, gen.finish_reason = gen.text[:max(again, len(self.sent))], "stop"
        if error is None and len(gen.text) > len(self.sent):
            self.pieces.put(gen.text[len(self.sent):])
            self.sent = gen.text
        gen.seconds = time.perf_counter() - gen.started
        self.pieces.put(error if error is not None else _END)
        return True


class Streams:
    """Reading a submitted request's pieces; shared by the local and the remote host decoders."""

    drafted = accepted = 0  # prompt-lookup draft tokens checked, and kept (a remote server drafts on its own)

    supports_logprobs = True  # the remote decoder does not pass them on

    def submit(self, chat: Sequence[dict[str, str]], max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
               seed: int | None = None, stop: Sequence[str] = (), gen: Generation | None = None,
               penalties: Penalties = NO_PENALTIES, top_logprobs: int | None = None,
               repeats: bool = False) -> DecodeRequest:
        raise NotImplementedError

    def pieces(self, req: DecodeRequest) -> Iterator[str]:
        """The request's text, piece by piece; HostBusy when it waited too long for a row."""
        try:
            while True:
                item = req.pieces.get()
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            req.cancelled = True  # a consumer gone early frees its row at the next step

    def first(self, req: DecodeRequest) -> Iterator[str]:
        """`pieces`, but waits for the first piece (or the refusal) before returning the iterator, so
        a route can answer 503 before it starts a response."""
        it = self.pieces(req)
        try:
            head = next(it)
        except StopIteration:
            return iter(())

        def rest() -> Iterator[str]:
            yield head
            yield from it
        return rest()

    def stream(self, chat: Sequence[dict[str, str]], max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
               seed: int | None = None, stop: Sequence[str] = (), gen: Generation | None = None,
               repeats: bool = False) -> Iterator[str]:
        """Yield the text of each new token (pieces concatenate to `gen.text`); `gen` gets the counts."""
        yield from self.pieces(self.submit(chat, max_tokens, temperature, top_p, seed, stop, gen, repeats=repeats))


class BatchDecoder(Streams):
    """Continuous batching over a causal LM's KV cache (see the module docstring)."""

    def __init__(self, tokenizer: Any, module: Any, device: str = "cpu", max_batch: int = 8,
                 max_wait_s: float = 5.0, prefix_cache: int = 64, warm_interval_s: float = 1.0,
                 threads: int | None = None, fast: bool = True, speculate: int = 2) -> None:
        if max_batch < 1 or max_wait_s <= 0 or not 0 <= speculate <= MAX_DRAFTS:
            raise ConfigError(f"max_batch >= 1, max_wait_s > 0 and 0 <= speculate <= {MAX_DRAFTS} expected, got "
                              f"{max_batch}, {max_wait_s}, {speculate}")
        self.tok, self.lm, self.device = tokenizer, module.to(device).eval(), device
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.prefix_cache = prefix_cache  # system prompts (a card and its rules) whose KV is kept, 0 = off
        self._prefixes: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        configured = getattr(module.generation_config, "eos_token_id", None)
        eos = {tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])}
        end = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
        self.stop_ids = {i for i in (*eos, end) if isinstance(i, int)}
        # fast: livemind's own forward for Llama students (livemind.serve.host.forward); False: transformers'
        self.runner = runner_for(self.lm) if fast else HFRunner(self.lm)
        self.max_context = getattr(module.config, "max_position_embeddings", None)  # prompt + answer tokens
        self._waiting: deque[DecodeRequest] = deque()
        self._warm: OrderedDict[tuple[int, ...], None] = OrderedDict()  # system-message tokens to prefill, newest last
        self.warm_interval_s, self._warmed_at = warm_interval_s, -math.inf
        self._warm_keys: dict[str, tuple[int, ...]] = {}  # card text -> its tokens (bounded by the catalog)
        # CPU threads of the loop thread (default: every core); see `own_threads` for the rest of the process
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.threads = threads or cores
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        # the running batch
        self._rows: list[DecodeRequest] = []
        # keys and values of every row: (layers, max_batch, kv heads, columns, head dim); the batch's
        # rows are the first B, its tokens the columns [lo, hi), right-aligned (left padding masked)
        self._K: torch.Tensor | None = None
        self._V: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None  # (max_batch, columns) True = a real token
        self._lo = self._hi = 0
        self._pos: torch.Tensor | None = None  # (B,) each row's next position
        self._logits: torch.Tensor | None = None  # (B, V) each row's next-token logits
        self.steps = 0  # decode steps run (a metric)
        # prompt-lookup draft tokens a row decoding alone checks per step (0: off); livemind's own forward
        # only: the drafts it checks were measured there (transformers' forward, e.g. the MoE student, decodes plainly)
        self.speculate = speculate if isinstance(self.runner, FastLlama) else 0
        self.drafted = self.accepted = 0  # draft tokens checked, and kept (metrics)
        self.reallocations = 0  # times the key/value buffers were allocated anew

    # ------------------------------------------------------------------------------ public

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._rows)

    def prompt_ids(self, chat: Sequence[dict[str, str]]) -> torch.Tensor:
        text = self.tok.apply_chat_template(list(chat), tokenize=False, add_generation_prompt=True)
        return self.tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]  # (1, L)

    def submit(self, chat: Sequence[dict[str, str]], max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
               seed: int | None = None, stop: Sequence[str] = (), gen: Generation | None = None,
               penalties: Penalties = NO_PENALTIES, top_logprobs: int | None = None,
               repeats: bool = False) -> DecodeRequest:
        """Queue a request; its pieces arrive on `request.pieces` (see `pieces`); `repeats`: stop where a
        sentence is said again (the host's rule, `livemind.think.prompts.repeat_cut`)."""
        gen = gen if gen is not None else Generation()
        ids = self.prompt_ids(chat)
        gen.prompt_tokens = int(ids.shape[1])
        if self.max_context and gen.prompt_tokens + max_tokens > self.max_context:
            raise ContextTooLong(f"this model's maximum context length is {self.max_context} tokens; the messages have "
                                 f"{gen.prompt_tokens} and max_tokens is {max_tokens}")
        req = DecodeRequest(ids, chat, max_tokens, temperature, top_p, seed, stop, gen, penalties, top_logprobs, repeats)
        with self._wake:
            if self._closed:
                raise HostBusy("the host is shutting down")
            self._waiting.append(req)
            self._ensure_thread()
            self._wake.notify()
        return req

    def warm(self, system: dict[str, str]) -> None:
        """Queue a system message (a card) for prefilling into the prefix cache (see the module
        docstring: idle time only, rate-limited, the newest `WARM_QUEUE` kept)."""
        if not self.prefix_cache or system.get("role") != "system":
            return
        key = self._warm_keys.get(system["content"])
        if key is None:  # a card's text is fixed: tokenise it once, not at every segment that shows it
            head = self.tok.apply_chat_template([system], tokenize=False, add_generation_prompt=False)
            key = self._warm_keys[system["content"]] = tuple(self.tok(head, add_special_tokens=False)["input_ids"])
        with self._wake:
            if key in self._prefixes or self._closed:
                return
            self._warm.pop(key, None)
            self._warm[key] = None
            while len(self._warm) > WARM_QUEUE:
                self._warm.popitem(last=False)
            self._ensure_thread()
            self._wake.notify()

    @property
    def warming(self) -> int:
        return len(self._warm)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ------------------------------------------------------------------------------ the loop

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="livemind-host-decoder", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        if self.device == "cpu":
            own_threads(self.threads)
        while True:
            with self._wake:
                while not self._waiting and not self._rows and not self._closed:
                    if self._warm:  # idle: a card to prefill once the interval has passed
                        wait = self._warmed_at + self.warm_interval_s - time.perf_counter()
                        if wait <= 0:
                            break
                        self._wake.wait(wait)
                    else:
                        self._wake.wait()
                if self._closed:
                    for req in [*self._waiting, *self._rows]:
                        req.finish(HostBusy("the host is shutting down"))
                    self._waiting.clear()
                    return
                admit = self._take_admissible()
                idle = not self._waiting and not admit and not self._rows
                ready = time.perf_counter() >= self._warmed_at + self.warm_interval_s
                warm = self._warm.popitem(last=True)[0] if self._warm and idle and ready else None
            try:
                with torch.inference_mode():
                    if warm is not None and warm not in self._prefixes:  # one card per turn, newest first
                        self._store_prefix(warm, self._prefill_card(warm))
                        self._warmed_at = time.perf_counter()
                    for req in admit:
                        self._admit(req)
                    if self._rows:
                        self._step()
            except Exception as exc:  # a model failure ends every running request with it, not the loop
                for req in [*admit, *self._rows]:
                    req.finish(exc)
                self._rows, self._pos, self._logits = [], None, None

    def _take_admissible(self) -> list[DecodeRequest]:
        """Refuse requests that waited too long; take as many as there are free rows (called locked)."""
        now, admit = time.perf_counter(), []
        while self._waiting and (self._waiting[0].cancelled or now - self._waiting[0].queued > self.max_wait_s):
            req = self._waiting.popleft()
            if not req.cancelled:
                req.finish(HostBusy(f"the host is busy: no generation slot within {self.max_wait_s:g} s"))
        while self._waiting and len(self._rows) + len(admit) < self.max_batch:
            req = self._waiting.popleft()
            if not req.cancelled:
                admit.append(req)
        return admit

    def _prefill(self, ids: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int) -> torch.Tensor:
        """Run a prompt (1, L) whose first `start` keys and values are in `keys`/`values` already
        (layers, 1, Hkv, >= L, D); the rest are written there. Its last logits (1, V)."""
        L = int(ids.shape[1])
        return self.runner.forward(ids[:, start:].to(self.device), torch.arange(start, L, device=self.device)[None], keys,
                                   values, start, torch.ones(1, L, dtype=torch.bool, device=self.device))

    def _admit(self, req: DecodeRequest) -> None:
        """Prefill one prompt (batch 1) straight into a free row of the batch's buffers, right-aligned
        with the others (left padding masked out), after the longest prefix whose keys and values are
        cached; a card not cached yet is stored from the same pass (its system message's columns)."""
        tokens = tuple(req.prompt)
        card = self._card_key(req.chat, tokens)
        past, start = self._longest_cached(tokens)
        req.gen.cached_tokens = start
        length = int(req.ids.shape[1])
        B = len(self._rows)
        if not B:  # an empty batch: reuse the buffers when the prompt fits
            self._lo = self._hi = length if self._K is not None and self._K.shape[3] > length else 0
        if self._hi < length:  # the prompt is longer than the batch's window: shift the window right
            self._reserve(length - self._hi)
        lo = self._hi - length
        keys, values = self._K[:, B:B + 1, :, lo:self._hi], self._V[:, B:B + 1, :, lo:self._hi]
        if start:
            keys[:, :, :, :start], values[:, :, :, :start] = past
        logits = self._prefill(req.ids, keys, values, start)
        if card is not None and card not in self._prefixes:  # a new card: its columns, copied out of the row
            n = len(card)
            self._store_prefix(card, (keys[:, :, :, :n].clone(), values[:, :, :, :n].clone()))
        self._mask[B] = False
        self._mask[B, lo:self._hi] = True
        self._lo = min(self._lo, lo) if B else lo
        self._pos = torch.cat([self._pos, torch.tensor([length], device=self.device)]) if B else \
            torch.tensor([length], device=self.device)
        self._logits = torch.cat([self._logits, logits]) if B else logits
        self._rows.append(req)

    def _reserve(self, shift: int) -> None:
        """The window [lo, hi) moved `shift` columns, with at least `KV_HEADROOM` free columns after it:
        in place when the buffers are big enough (a masked column may hold any finite value), else in
        new buffers (zeros: a masked column must hold no NaN) at least half as big again, so that a
        growing window reallocates rarely (each allocation of ~100 MB costs tens of ms, at a request's
        first token or in the middle of its answer)."""
        shape = self.runner.kv
        used, offset = self._hi - self._lo, self._lo + shift
        need = offset + used + KV_HEADROOM
        have = 0 if self._K is None else self._K.shape[3]
        if need <= have:
            for buf in (self._K, self._V):
                buf[:, :, :, offset:offset + used] = buf[:, :, :, self._lo:self._hi].clone()
            window = self._mask[:, self._lo:self._hi].clone()
            self._mask[:] = False
            self._mask[:, offset:offset + used] = window
        else:
            cap = max(need, have * 3 // 2)
            self.reallocations += 1
            K = torch.zeros(shape.layers, self.max_batch, shape.heads, cap, shape.dim, dtype=shape.dtype,
                            device=self.device)
            V = torch.zeros_like(K)
            mask = torch.zeros(self.max_batch, cap, dtype=torch.bool, device=self.device)
            if used:
                K[:, :, :, offset:offset + used] = self._K[:, :, :, self._lo:self._hi]
                V[:, :, :, offset:offset + used] = self._V[:, :, :, self._lo:self._hi]
                mask[:, offset:offset + used] = self._mask[:, self._lo:self._hi]
            self._K, self._V, self._mask = K, V, mask
        self._lo, self._hi = offset, offset + used

    def _step(self) -> None:
        """One token for every row; drop the rows that ended; one forward for the others (for a row
        decoding alone, with its prompt-lookup drafts: the tokens greedy decoding confirms are kept)."""
        tokens, keep = [], []
        for i, req in enumerate(self._rows):
            req.gen.batch = max(req.gen.batch, len(self._rows))
            if req.cancelled:
                req.finish()
                continue
            token = req.pick(self._logits[i])
            if not req.push(token, self.stop_ids, self.tok):
                tokens.append(token)
                keep.append(i)
        self.steps += 1
        if len(keep) < len(self._rows):
            self._rows = [self._rows[i] for i in keep]
            if not keep:
                self._pos, self._logits = None, None
                return
            idx = torch.tensor(keep, dtype=torch.long, device=self.device)
            B = len(keep)
            self._K[:, :B], self._V[:, :B] = self._K[:, idx], self._V[:, idx]
            self._mask[:B] = self._mask[idx]
            self._mask[B:] = False
            self._pos = self._pos[idx]
            live = self._mask[:B, self._lo:self._hi].any(0).nonzero()  # columns that are padding in every row go
            self._lo += int(live[0]) if len(live) else self._hi - self._lo
        B = len(self._rows)
        draft = self._draft(self._rows[0]) if B == 1 else []
        S = 1 + len(draft)
        if self._hi + S > self._K.shape[3]:
            self._reserve(-self._lo)  # out of columns: move the window to the buffers' start, add room
        lo, hi = self._lo, self._hi
        self._mask[:B, hi:hi + S] = True
        ids = torch.tensor([tokens[0], *draft] if draft else tokens, device=self.device).view(B, S)
        pos = self._pos.view(B, 1) + torch.arange(S, device=self.device)
        out = self.runner.forward(ids, pos, self._K[:, :B, :, lo:], self._V[:, :B, :, lo:], hi - lo,
                                  self._mask[:B, lo:hi + S], every=bool(draft))
        taken = self._check(self._rows[0], draft, out[0]) if draft else 0
        if draft and self._rows[0].done:  # a draft token ended the request: its row is free now
            self._rows, self._pos, self._logits = [], None, None
            return
        self._logits = out[:, taken] if draft else out  # (B, V): the logits after the last token kept
        self._hi, self._pos = hi + 1 + taken, self._pos + 1 + taken  # a rejected draft's columns are written over

    def _draft(self, req: DecodeRequest) -> list[int]:
        """Prompt-lookup drafts for a greedy row decoding alone: the tokens that followed the latest
        earlier occurrence of its last tokens, in the prompt or the answer so far (answers copy names,
        prices and facts from the card); none when speculation is off or the runner cannot check."""
        budget = min(self.speculate, req.max_tokens - len(req.made))
        if budget < 1 or not req.plain:
            return []
        return lookup(req.prompt + req.made, budget)

    def _check(self, req: DecodeRequest, draft: list[int], logits: torch.Tensor) -> int:
        """How many draft tokens greedy decoding makes too (`logits` (1 + len(draft), V): position j's
        logits choose the token after the j-th one run); each kept one is streamed like a picked one."""
        taken = 0
        for j, token in enumerate(draft):
            if int(torch.argmax(logits[j])) != token:
                break
            taken += 1
            if req.push(token, self.stop_ids, self.tok):  # it ended the request (a stop, the budget)
                break
        self.drafted, self.accepted = self.drafted + len(draft), self.accepted + taken
        return taken

    def _card_key(self, chat: Sequence[dict[str, str]], tokens: tuple[int, ...]) -> tuple[int, ...] | None:
        """The tokens of the prompt's system message (a room's card and the host's rules) when the
        prompt starts with one and the cache is on: many viewers ask about the same card."""
        if not self.prefix_cache or not chat or chat[0].get("role") != "system":
            return None
        head = self.tok.apply_chat_template(list(chat[:1]), tokenize=False, add_generation_prompt=False)
        key = tuple(self.tok(head, add_special_tokens=False)["input_ids"])
        if len(key) >= len(tokens) or tokens[:len(key)] != key:  # the template does not split there
            return None
        return key

    def _longest_cached(self, tokens: tuple[int, ...]) -> tuple[Any, int]:
        """(keys and values, length) of the longest cached prefix of `tokens` that leaves at least one
        token to run (a card, or the head every card shares); (None, 0) when there is none. Keys and
        values at a position depend only on the tokens up to it, so any cached prefix is exact."""
        best = max((k for k in self._prefixes if len(k) < len(tokens) and tokens[:len(k)] == k), key=len, default=None)
        if best is None:
            return None, 0
        self._prefixes.move_to_end(best)
        return self._prefixes[best], len(best)  # read, never written: a request copies it into its own row

    def _prefill_card(self, key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """A card's keys and values ahead of its first question (`warm`), after its longest cached prefix."""
        past, start = self._longest_cached(key)
        shape = self.runner.kv
        keys, values = (torch.zeros(shape.layers, 1, shape.heads, len(key), shape.dim, dtype=shape.dtype,
                                    device=self.device) for _ in "kv")
        if start:
            keys[:, :, :, :start], values[:, :, :, :start] = past
        self._prefill(torch.tensor([key]), keys, values, start)
        return keys, values

    def _store_prefix(self, key: tuple[int, ...], kv: Any) -> None:
        """Cache a card's keys and values (the least recently used card leaves past `prefix_cache`);
        the longest head it shares with a cached card (the host's rules before the documents) is kept
        as its own entry, so a card never seen starts after it; a card that already starts after a
        cached head adds no other (two cards of one brand would otherwise cache their brand too)."""
        heads = [k for k in self._prefixes if len(k) < len(key) and key[:len(k)] == k]
        shared = 0 if any(len(k) >= SHARED_MIN for k in heads) else max((_common(key, k) for k in self._prefixes), default=0)
        if SHARED_MIN <= shared < len(key):  # one level of heads: a card that starts after one makes no other
            self._prefixes[key[:shared]] = tuple(t[:, :, :, :shared].clone() for t in kv)
        self._prefixes[key] = kv
        self._prefixes.move_to_end(key)
        while len(self._prefixes) > self.prefix_cache:
            self._prefixes.popitem(last=False)


def lookup(tokens: list[int], k: int, longest: int = 3) -> list[int]:
    """Up to `k` tokens that followed the latest earlier occurrence of the longest suffix of `tokens`
    (at most `longest` tokens) that occurred before; [] when none did.

    >>> lookup([5, 6, 7, 8, 9, 1, 5, 6, 7], 3), lookup([5, 6, 7, 5, 6, 9, 6], 2), lookup([1, 2, 3], 2)
    ([8, 9, 1], [9, 6], [])
    """
    seq = np.asarray(tokens)
    for n in range(min(longest, len(seq) - 1), 0, -1):
        hit = np.ones(len(seq) - n, dtype=bool)  # hit[i]: seq[i:i + n] is the suffix (i < len - n: not itself)
        for j in range(n):
            hit &= seq[j:len(seq) - n + j] == seq[len(seq) - n + j]
        found = np.flatnonzero(hit)
        if found.size:
            start = int(found[-1]) + n
            return [int(t) for t in seq[start:start + k]]
    return []


def _common(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """How many leading tokens two token tuples share.

    >>> _common((1, 2, 3, 4), (1, 2, 5)), _common((1, 2), (1, 2, 3)), _common((7,), (1,))
    (2, 2, 0)
    """
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
