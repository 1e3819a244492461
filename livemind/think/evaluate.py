"""Evaluation of a host model on QA tasks: correctness, helpfulness, EM/F1, tokens, latency, compute.

Every answer is judged by `rule_judge` (verifier for generated tasks, EM/F1 where the task has
reference answers). Correctness is the share of answers judged correct: an unknown verdict counts
as not correct, and so does an answer cut off at the length limit (`Completion.cut_off`).
Helpfulness is the mean proxy score over answerable tasks; `unsaid` is the share of answerable tasks
answered "the card doesn't say" (`verify.says_unsaid`), the short non-answer a length reward can
teach. Token counts split the completion into reasoning (inside `<think>`) and answer with the
model's tokenizer. Compute per answer is LiveThinking's accounting: 2 × active parameters ×
generated tokens (FLOPs of decoding; the prompt is the same for all models).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from livemind.think.backends import Backend, Completion, Sampling
from livemind.think.judge import Judgement, rule_judge
from livemind.think.prompts import messages, split_reasoning
from livemind.think.tasks import QATask
from livemind.think.verify import says_unsaid, verify


@dataclass
class Scored:
    task: QATask
    completion: Completion
    judgement: Judgement
    reasoning_tokens: int
    answer_tokens: int
    truncated: bool

    @property
    def correct(self) -> bool:
        return self.judgement.correct is True and not self.truncated


def score(tasks: Sequence[QATask], completions: Sequence[Completion], count_tokens: Callable[[str], int],
          max_tokens: int, judge: Callable[[QATask, str], Judgement] = rule_judge) -> list[Scored]:
    """Judge and count one completion per task (failed requests score as wrong, 0 tokens)."""
    out = []
    for task, c in zip(tasks, completions, strict=True):
        text = c.text or ""
        reasoning, answer = split_reasoning(text)
        j = judge(task, text) if c.text is not None else Judgement(None, None)
        out.append(Scored(task, c, j, count_tokens(reasoning) if reasoning else 0, count_tokens(answer) if answer else 0,
                          c.cut_off(max_tokens)))
    return out


def _dist(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"mean": math.nan, "median": math.nan, "p90": math.nan}
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p90": float(np.percentile(a, 90))}


def summarize(scored: Sequence[Scored], active_params: float) -> dict[str, float]:
    """Headline figures of one model on one task set.

    >>> from livemind.think.tasks import QATask
    >>> t = QATask("1", "price", ("Mug. 9.00 each.",), "how much?", {"number": 9.0})
    >>> s = score([t, t], [Completion("<think>9</think> It is 9.00.", 10), Completion("It is 8.00.", 4)],
    ...           lambda s: len(s.split()), max_tokens=64)
    >>> r = summarize(s, active_params=1e6)
    >>> r["correct"], r["tokens_mean"], r["answer_tokens_mean"], r["reasoning_tokens_mean"], r["compute_per_answer"]
    (0.5, 7.0, 3.0, 0.5, 14000000.0)
    """
    n = max(len(scored), 1)
    answerable = [s for s in scored if s.task.answerable]
    per_task = _per_task(scored)
    has_help = ~np.isnan(per_task["helpful"])
    em = [s.judgement.em for s in scored if s.judgement.em is not None]
    f1 = [s.judgement.f1 for s in scored if s.judgement.f1 is not None]
    tokens = per_task["tokens"].tolist()
    out = {"n": float(len(scored)), "correct": sum(s.correct for s in scored) / n,
           "unknown": sum(s.judgement.correct is None for s in scored) / n,
           "truncated": sum(s.truncated for s in scored) / n,
           "helpful": float(per_task["helpful"][has_help].mean()) if has_help.any() else math.nan,
           # the same on right answers only (a wrong answer scores 0): the proxy alone pays facts beside a wrong answer
           "helpful_correct": float(per_task["helpful_correct"][has_help].mean()) if has_help.any() else math.nan,
           # answerable questions answered "the card doesn't say": the short non-answer a brevity reward can teach
           "unsaid": (sum(says_unsaid(s.completion.text or "") for s in answerable) / len(answerable)
                      if answerable else math.nan),
           "em": float(np.mean(em)) if em else math.nan, "f1": float(np.mean(f1)) if f1 else math.nan,
           **hack_check(scored)}
    for name, values in (("tokens", tokens), ("reasoning_tokens", [float(s.reasoning_tokens) for s in scored]),
                         ("answer_tokens", [float(s.answer_tokens) for s in scored]),
                         ("seconds", [s.completion.seconds for s in scored if not s.completion.cached])):
        for stat, v in _dist(values).items():
            out[f"{name}_{stat}"] = v
    out["compute_per_answer"] = 2.0 * active_params * out["tokens_mean"]
    return out


HACKS = {  # verdict reasons (verify.py) -> the hack they show
    "hack_candidates": ("candidate values", "conflicting values", "alternatives", "numbers: no committed"),
    "hack_hedged": ("hedged", "both yes and no", "silent and answers", "adds a guess"),
    "hack_uncommitted": ("no value that answers", "no readable answer", "no final answer", "pastes the card"),
}


def hack_check(scored: Sequence[Scored]) -> dict[str, float]:
    """Shares of answers that list several candidate values, hedge, or commit to no answer (
    what a policy optimised against the verifier would learn first).

    >>> from livemind.think.tasks import QATask
    >>> t = QATask("1", "price", ("Mug. 9.00 each.",), "how much?", {"number": 9.0})
    >>> s = score([t] * 4, [Completion(x, 4) for x in ("9.00.", "9.00 or 9.50.", "0 1 2 3 4 5 6 7 8 9 10 11", "Hi!")],
    ...           lambda s: 1, max_tokens=64)
    >>> hack_check(s)
    {'hack_candidates': 0.5, 'hack_hedged': 0.0, 'hack_uncommitted': 0.25}
    """
    n = max(len(scored), 1)
    reasons = [verify(s.task, s.completion.text or "").reason for s in scored]
    return {k: sum(any(m in r for m in marks) for r in reasons) / n for k, marks in HACKS.items()}


def _per_task(scored: Sequence[Scored]) -> dict[str, np.ndarray]:
    """Per-task values behind the headline figures (helpfulness: NaN where the task has none)."""
    helpful = np.array([math.nan if not s.task.answerable or s.judgement.helpful is None else s.judgement.helpful
                        for s in scored])
    correct = np.array([float(s.correct) for s in scored])
    return {"tokens": np.array([float(s.completion.tokens) for s in scored]), "correct": correct,
            "helpful": helpful, "helpful_correct": np.where(np.isnan(helpful), math.nan, helpful * correct)}


def paired_intervals(before: Sequence[Scored], after: Sequence[Scored], resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Intervals of the changes from `before` to `after` on the same tasks, by a paired bootstrap over
    tasks: `length_ratio` (mean tokens after / before), and the differences after − before of
    `correct`, `helpful` and `helpful_correct` (helpfulness averaged over the answerable tasks drawn).

    >>> from livemind.think.tasks import QATask
    >>> t = QATask("1", "price", ("Mug. 9.00 each.",), "how much?", {"number": 9.0})
    >>> a = score([t] * 4, [Completion("It's 8.00.", 10)] * 4, lambda s: 1, max_tokens=64)
    >>> b = score([t] * 4, [Completion("It's 9.00.", 5)] * 4, lambda s: 1, max_tokens=64)
    >>> r = paired_intervals(a, b, resamples=50)
    >>> r["length_ratio"], r["correct"]
    ((0.5, 0.5), (1.0, 1.0))
    """
    if len(before) != len(after) or any(x.task.id != y.task.id for x, y in zip(before, after, strict=True)):
        raise ValueError("paired_intervals needs the same tasks, in the same order, on both sides")
    if not before:
        raise ValueError("paired_intervals needs at least one task")
    a, b = _per_task(before), _per_task(after)
    idx = np.random.default_rng(seed).integers(0, len(before), size=(resamples, len(before)))
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no answerable task: NaN
        stats = {"length_ratio": b["tokens"][idx].mean(1) / a["tokens"][idx].mean(1),
                 **{k: np.nanmean(b[k][idx], 1) - np.nanmean(a[k][idx], 1)
                    for k in ("correct", "helpful", "helpful_correct")}}
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {k: (float(np.nanpercentile(v, lo)), float(np.nanpercentile(v, hi))) for k, v in stats.items()}


def by_kind(scored: Sequence[Scored]) -> dict[str, dict[str, float]]:
    """Correctness and mean tokens per task kind."""
    kinds: dict[str, list[Scored]] = {}
    for s in scored:
        kinds.setdefault(s.task.kind, []).append(s)
    return {k: {"n": len(v), "correct": sum(s.correct for s in v) / len(v),
                "tokens": float(np.mean([s.completion.tokens for s in v]))} for k, v in sorted(kinds.items())}


def answer(backend: Backend, tasks: Sequence[QATask], sampling: Sampling) -> list[Completion]:
    """One completion per task with the task's prompt (`prompts.system_for`)."""
    return [row[0] for row in backend.generate([messages(t) for t in tasks], sampling)]


def active_parameters(model) -> int:
    """Parameters used per token: all of a dense model's; for a mixture of experts, the shared
    weights plus `num_experts_per_tok` of each layer's `num_experts` experts."""
    total = sum(p.numel() for p in model.parameters())
    cfg = getattr(model, "config", None)
    n_exp = getattr(cfg, "num_experts", None) or getattr(cfg, "num_local_experts", None)  # Qwen3-MoE / Mixtral
    k = getattr(cfg, "num_experts_per_tok", None)
    if not n_exp or not k:
        return total
    expert = sum(p.numel() for name, p in model.named_parameters() if ".experts." in name)
    return int(total - expert + expert * k / n_exp)


def compute_reduction(teacher: dict[str, float], rft: dict[str, float], grpo: dict[str, float],
                      teacher_params: float, student_params: float) -> dict[str, float]:
    """LiveThinking's split of the compute saving: distillation (teacher -> RFT student, mostly the
    parameter ratio) times brevity (RFT -> GRPO tokens at the same size).

    >>> r = compute_reduction({"tokens_mean": 100}, {"tokens_mean": 120}, {"tokens_mean": 48}, 3e9, 0.25e9)
    >>> r["distillation"], r["brevity"], r["total"]
    (10.0, 2.5, 25.0)
    """
    c_teacher = 2 * teacher_params * teacher["tokens_mean"]
    c_rft = 2 * student_params * rft["tokens_mean"]
    c_grpo = 2 * student_params * grpo["tokens_mean"]
    return {"distillation": c_teacher / c_rft, "brevity": c_rft / c_grpo, "total": c_teacher / c_grpo}


LOOKUP_KINDS = ("price", "shipping", "spec", "size", "compare", "stock", "returns")
ARITHMETIC_KINDS = ("bundle", "coupon", "free_shipping")


def kind_figures(kinds: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """The host's bars by kind: the lowest correctness of the look-up kinds and of the arithmetic kinds,
    the share of unanswerable questions declined and of injected comments declined (None: no such task).

    >>> kind_figures({"price": {"correct": 1.0}, "stock": {"correct": 0.5}, "coupon": {"correct": 0.25},
    ...               "unanswerable": {"correct": 0.75}})
    {'correct_lookup_min': 0.5, 'correct_arithmetic_min': 0.25, 'declined_unanswerable': 0.75, 'declined_adversarial': None}
    """
    def lowest(names: tuple[str, ...]) -> float | None:
        have = [kinds[k]["correct"] for k in names if k in kinds]
        return round(min(have), 4) if have else None

    def share(kind: str) -> float | None:
        return round(kinds[kind]["correct"], 4) if kind in kinds else None

    return {"correct_lookup_min": lowest(LOOKUP_KINDS), "correct_arithmetic_min": lowest(ARITHMETIC_KINDS),
            "declined_unanswerable": share("unanswerable"), "declined_adversarial": share("adversarial")}


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion of `n` trials.

    >>> [round(x, 3) for x in wilson(8, 10)], wilson(0, 0)
    ([0.49, 0.943], (0.0, 1.0))
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))
