"""Judges: correctness and helpfulness of an answer to a task.

- Rule judges (no model): `verify` for generated tasks, EM/F1 for tasks with reference answers.
- `LLMJudge`: a rubric sent to any `Backend` (a large model behind an OpenAI-compatible server,
  or a local one); the reply must end with "Score: <0-10>" (or JSON {"score": x}). A reply that
  does not parse is scored as unknown (None) — never as correct.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from livemind.think.backends import Backend, Sampling
from livemind.think.tasks import QATask
from livemind.think.verify import exact_match, f1, final_answer, helpfulness, verify

CORRECTNESS_RUBRIC = (
    "You grade a live-shopping host's answer. Criteria: every claim is verifiable in the product "
    "documents; it is consistent with the dialogue so far; it answers the viewer's question (or says "
    "the documents do not say, when they do not). Reply with a one-sentence reason and then a final "
    "line 'Score: N' with N from 0 (wrong) to 10 (fully correct)."
)
HELPFULNESS_RUBRIC = (
    "You grade how helpful a live-shopping host's answer is. Criteria: it anticipates the viewer's "
    "underlying need and adds relevant facts from the product documents, without inventing any. Reply "
    "with a one-sentence reason and then a final line 'Score: N' with N from 0 to 10."
)
_SCORE = re.compile(r"score\s*[:=]\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*$", re.IGNORECASE)


def parse_score(reply: str | None) -> float | None:
    """A 0-10 score scaled to [0, 1], or None when the reply does not state one.

    >>> parse_score("Accurate and complete.\\nScore: 8"), parse_score('{"score": 10}'), parse_score("looks fine")
    (0.8, 1.0, None)
    """
    if not reply:
        return None
    text = reply.strip()
    try:
        obj = json.loads(text)
        if isinstance(obj, dict) and isinstance(obj.get("score"), int | float):
            value = float(obj["score"])
            return value / 10 if 0 <= value <= 10 else None
    except json.JSONDecodeError:
        pass
    m = _SCORE.search(text.splitlines()[-1]) if text.splitlines() else None
    if m is None:
        return None
    value = float(m.group(1))
    return value / 10 if 0 <= value <= 10 else None


@dataclass
class Judgement:
    correct: bool | None  # None: unknown
    helpful: float | None  # [0, 1] or None (not applicable / unknown)
    em: float | None = None
    f1: float | None = None


def rule_judge(task: QATask, answer: str) -> Judgement:
    """Verifier (and EM/F1 where the task has reference answers); no model."""
    text = final_answer(answer)
    em = f1_ = None
    if "answers" in task.gold:
        refs = task.gold["answers"]
        em = max(exact_match(text, r) for r in refs) if refs else 0.0
        f1_ = max(f1(text, r) for r in refs) if refs else 0.0
    return Judgement(verify(task, answer).correct, helpfulness(task, answer), em, f1_)


class LLMJudge:
    """Rubric judging through a backend; `threshold` turns the correctness score into a verdict."""

    def __init__(self, backend: Backend, threshold: float = 0.7, max_tokens: int = 128) -> None:
        self.backend, self.threshold = backend, threshold
        self.sampling = Sampling(temperature=0.0, max_tokens=max_tokens, n=1, seed=0)

    def _ask(self, rubric: str, tasks: Sequence[QATask], answers: Sequence[str]) -> list[float | None]:
        prompts = []
        for t, a in zip(tasks, answers):
            docs = "\n".join(f"[{i + 1}] {d}" for i, d in enumerate(t.documents))
            dialogue = "\n".join(f"{r}: {x}" for r, x in t.history) or "(none)"
            prompts.append([{"role": "system", "content": rubric},
                            {"role": "user", "content": f"Documents:\n{docs}\n\nDialogue so far:\n{dialogue}\n\n"
                                                        f"Viewer question: {t.question}\n\nHost answer: {final_answer(a)}"}])
        return [parse_score(row[0].text) for row in self.backend.generate(prompts, self.sampling)]

    def judge(self, tasks: Sequence[QATask], answers: Sequence[str]) -> list[Judgement]:
        correct = self._ask(CORRECTNESS_RUBRIC, tasks, answers)
        helpful = self._ask(HELPFULNESS_RUBRIC, tasks, answers)
        return [Judgement(None if c is None else c >= self.threshold, h) for c, h in zip(correct, helpful)]
