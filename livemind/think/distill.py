"""`livemind think distill`: the RFT run end to end, resumable.

tasks (JSONL) -> K teacher samples each (cached in OUT/cache.sqlite: a rerun or a resumed run
sends no request twice) -> judged -> selected -> OUT/traces.jsonl, OUT/sft.jsonl,
OUT/accept.json -> the student fine-tuned with TRL -> OUT/student (a Hugging Face folder).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from livemind.errors import ConfigError
from livemind.think.backends import Backend, HFBackend, OpenAIBackend, ResponseCache, Sampling
from livemind.think.rft import (
    SELECTIONS,
    SFTSettings,
    accept_report,
    finetune,
    reference_traces,
    sample_traces,
    select,
    sft_records,
)
from livemind.think.tasks import read_tasks, write_jsonl


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a hub name or a local folder, optionally a GGUF file inside it,
    or an OpenAI-compatible server (`backend="openai"`, teachers only). `backend="reference"`
    (teachers only) uses the tasks' worked solutions instead of a model (`rft.reference_traces`)."""

    backend: Literal["hf", "openai", "reference"] = "hf"
    model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    gguf_file: str | None = None
    base_url: str | None = None  # openai: e.g. http://localhost:8000/v1 (vLLM, SGLang) or a hosted API
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8  # openai: requests in flight
    batch_size: int = 16  # hf: sequences decoded together
    timeout: float = 60.0
    retries: int = 3

    def __post_init__(self) -> None:
        if self.backend not in ("hf", "openai", "reference"):
            raise ValueError(f"backend must be 'hf', 'openai' or 'reference', got {self.backend!r}")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("an openai backend needs base_url")

    def backend_for(self, cache: ResponseCache | None, float_cache: str | Path | None = None) -> Backend:
        """The generation backend; `float_cache` keeps a dequantised copy of a GGUF (see `load_causal_lm`)."""
        if self.backend == "reference":
            raise ConfigError("the reference teacher is not a model: it has no generation backend")
        if self.backend == "openai":
            return OpenAIBackend(self.model, self.base_url, os.environ.get(self.api_key_env), self.concurrency,
                                 self.timeout, self.retries, cache=cache)
        return HFBackend(self.model, self.gguf_file, batch_size=self.batch_size, cache=cache, float_cache=float_cache)


@dataclass(frozen=True)
class DistillConfig:
    tasks: str = "runs/tasks/train.jsonl"
    teacher: ModelSource = field(default_factory=ModelSource)
    student: ModelSource = field(default_factory=ModelSource)
    samples: int = 4  # K traces per question
    temperature: float = 0.8
    max_tokens: int = 256
    selection: Literal["all", "shortest", "most_helpful"] = "shortest"
    limit: int | None = None  # first N tasks only
    sft: SFTSettings = field(default_factory=SFTSettings)

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {list(SELECTIONS)}, got {self.selection!r}")
        if self.student.backend != "hf":
            raise ValueError("the student is fine-tuned locally: student.backend must be 'hf'")
        if self.samples < 1 or (self.limit is not None and self.limit < 1):
            raise ValueError(f"samples and limit must be at least 1, got {self.samples} and {self.limit}")


def run_distill(cfg: DistillConfig, out: str | Path, log: Callable[[str], None] = print,
                max_steps: int = -1, float_cache: str | Path | None = "runs/cache/models") -> dict:
    out = Path(out)
    tasks = read_tasks(cfg.tasks)  # a malformed task file fails here, before any request
    tasks = tasks[:cfg.limit] if cfg.limit else tasks
    if not tasks:
        raise ConfigError(f"{cfg.tasks} holds no tasks")
    student = HFBackend(cfg.student.model, cfg.student.gguf_file, float_cache=float_cache)
    if cfg.teacher.backend == "reference":
        traces = reference_traces(tasks, cfg.samples, lambda text: len(student.tok(text)["input_ids"]))
    else:
        teacher = cfg.teacher.backend_for(ResponseCache(out / "cache.sqlite"), float_cache)
        t0 = time.perf_counter()
        if isinstance(teacher, HFBackend):
            teacher.progress = lambda done, total: log(f"teacher samples {done:,}/{total:,} ({time.perf_counter() - t0:.0f} s)")
        sampling = Sampling(temperature=cfg.temperature, max_tokens=cfg.max_tokens, n=cfg.samples, seed=0)
        traces = sample_traces(tasks, teacher, sampling)
    report = accept_report(traces)
    log(f"{len(traces):,} traces from {len(tasks):,} tasks; accept rate {report['all']['accept_rate']:.1%}, "
        f"{report['all']['failed']} failed requests")
    write_jsonl([{"task_id": t.task.id, "kind": t.task.kind, "text": t.completion.text, "tokens": t.completion.tokens,
                  "error": t.completion.error, "correct": t.judgement.correct, "helpful": t.judgement.helpful}
                 for t in traces], out / "traces.jsonl")
    kept = select(traces, cfg.selection)
    rows = sft_records(kept)
    write_jsonl(rows, out / "sft.jsonl")
    (out / "accept.json").write_text(json.dumps({"report": report, "kept": len(kept), "config": asdict(cfg)}, indent=2,
                                                default=str))
    log(f"kept {len(kept):,} traces ({cfg.selection}); SFT set in {out / 'sft.jsonl'}")
    model, losses = finetune(student.lm, student.tok, rows, cfg.sft, out / "sft_run", max_steps=max_steps)
    if cfg.sft.lora:
        model = model.merge_and_unload()
    if getattr(model, "hf_quantizer", None) is not None:  # a GGUF-loaded model was dequantised to float
        model.hf_quantizer = None
        model.config.quantization_config = None
    model.save_pretrained(out / "student")
    student.tok.save_pretrained(out / "student")
    log(f"student fine-tuned: loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps; saved to {out / 'student'}")
    return {"report": report, "kept": len(kept), "losses": losses}
