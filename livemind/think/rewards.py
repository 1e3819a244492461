"""GRPO rewards for the host (LiveThinking stage II), with TRL's reward-function signature:
`reward(prompts, completions, **columns) -> list[float | None]` (None: not applicable to that
completion; TRL ignores it in the weighted sum). Each dataset row carries its task as JSON in the
`task` column; TRL passes `completion_ids` (token IDs), which the length rewards read.

- `Correctness`: 1 when the stage-I judge accepts the answer (verifier, or EM for MuSiQue), else 0.
- `Helpfulness`: the verifier-based proxy in [0, 1]; None for unanswerable/adversarial tasks.
- `HelpfulCorrect` (`helpful_correct`): the same proxy on answers the judge accepts, 0 on the others
  (the proxy counts card facts even beside a wrong answer, so a policy can earn it with a fixed
  "price and shipping" sentence whatever the question).
- `Brevity`: three published forms on the completion's token count L —
  `kimi` (Kimi k1.5, within each group of answers to one prompt: λ = 0.5 − (L − L_min)/(L_max − L_min),
  kept for correct answers and min(0, λ) for wrong ones when it applies to all), `dapo_overlong` (DAPO's soft overlong
  penalty: 0 up to L_max − L_cache, then falling linearly to −1 at L_max), `target`
  (−|L − L*|/L*, floored at −1). `apply_to` says who gets it: `correct` answers only (others 0),
  groups that are `mostly_correct` (share of correct answers ≥ `min_correct`), `all`, or
  `correct_helpful`: like `all`, but only correct answers as helpful as their group's most helpful
  correct answer keep a bonus (the others get min(0, λ)), so an answer never earns length reward
  by dropping the card facts that its siblings kept. `measure` says what L counts: the whole
  `completion`, or only the `reasoning` inside `<think>…</think>` (the paper's stage II shortens the
  reasoning; the answer, where the card facts are, is left alone), in tokens of the student's
  tokenizer when one is given, else words. `fact_allowance` forgives that many tokens of L for
  each card fact the answer mentions (the two that helpfulness counts), so dropping a fact never
  makes an answer "shorter": only reasoning and filler do.
- `Format`: 1 for `<think>…</think>` followed by a non-empty answer, else 0.
- `Answered`: −1 when an answerable question gets "the card doesn't say" (a short non-answer that is
  right on unanswerable questions, so length pressure can teach it everywhere), else 0; None where
  declining is a valid answer.
- `Conceded`: −1 when an adversarial answer grants the discount or claim the task forbids, else 0;
  None for the other kinds (the concession penalty).

A completion cut off at the length limit (L ≥ `max_tokens`) is never rewarded as correct or
helpful, and earns no brevity bonus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from livemind.errors import ConfigError
from livemind.think.judge import rule_judge
from livemind.think.prompts import split_reasoning
from livemind.think.tasks import QATask
from livemind.think.verify import conceded, helpfulness, says_unsaid

BREVITY_FORMS = ("kimi", "dapo_overlong", "target")
APPLY_TO = ("correct", "mostly_correct", "all", "correct_helpful")
MEASURES = ("completion", "reasoning")
_FORMAT = re.compile(r"^\s*<think>.+?</think>\s*\S", re.DOTALL)


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a list of chat messages (the assistant's content).

    >>> completion_text([{"role": "assistant", "content": "hi"}]), completion_text("hello")
    ('hi', 'hello')
    """
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant")


def task_of(value: Any) -> QATask:
    """A task from the dataset's `task` column (a JSON string or a mapping)."""
    return QATask.from_dict(json.loads(value) if isinstance(value, str) else value, "task column")


def _lengths(completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None) -> list[int]:
    if completion_ids is not None:
        return [len(ids) for ids in completion_ids]
    return [len(completion_text(c).split()) for c in completions]  # words, when no token IDs are given


class _Reward:
    """Base: TRL logs a reward function under its `__name__`."""

    __name__ = "reward"

    def __init__(self, max_tokens: int | None = None) -> None:
        if max_tokens is not None and max_tokens < 1:
            raise ConfigError(f"max_tokens must be at least 1, got {max_tokens}")
        self.max_tokens = max_tokens

    def truncated(self, length: int) -> bool:
        return self.max_tokens is not None and length >= self.max_tokens

    def _correct(self, prompts, completions, task, completion_ids=None) -> list[bool]:
        lengths = _lengths(completions, completion_ids)
        return [rule_judge(task_of(t), completion_text(c)).correct is True and not self.truncated(n)
                for c, t, n in zip(completions, task, lengths, strict=True)]


class Correctness(_Reward):
    """1.0 for an answer the judge accepts, 0.0 otherwise (wrong, unknown, or cut off).

    >>> t = QATask("1", "price", ("Mug. 9.00 each.",), "how much?", {"number": 9.0}).to_json()
    >>> Correctness(max_tokens=64)([[]] * 3, ["It's 9.00.", "It's 8.00.", "It's 9.00"], task=[t] * 3,
    ...                            completion_ids=[[0] * 5, [0] * 5, [0] * 64])
    [1.0, 0.0, 0.0]
    """

    __name__ = "correctness"

    def __call__(self, prompts, completions, task, completion_ids=None, **_) -> list[float | None]:
        return [float(ok) for ok in self._correct(prompts, completions, task, completion_ids)]


class Helpfulness(_Reward):
    """The verifier's helpfulness proxy; None where the task has no answer to help with.

    >>> t = QATask("1", "price", ("Mug. 9.00 each. Ships in 2 days.",), "how much?", {"number": 9.0},
    ...            facts=("2 day", "10%")).to_json()
    >>> u = QATask("2", "unanswerable", ("Mug.",), "waterproof?", {"refuse": "not_in_documents"}, answerable=False).to_json()
    >>> Helpfulness()([[]] * 3, ["9.00, ships in 2 days", "9.00, or 7.50 for you", "not on the card"], task=[t, t, u])
    [0.5, 0.0, None]
    """

    __name__ = "helpfulness"

    def __call__(self, prompts, completions, task, completion_ids=None, **_) -> list[float | None]:
        lengths = _lengths(completions, completion_ids)
        out: list[float | None] = []
        for c, t, n in zip(completions, task, lengths, strict=True):
            q = task_of(t)
            h = helpfulness(q, completion_text(c))
            out.append(None if h is None else 0.0 if self.truncated(n) else h)
        return out


class HelpfulCorrect(_Reward):
    """Helpfulness of correct answers; a wrong, unknown or cut-off answer gets 0 (None where the task
    has no answer to help with).

    >>> t = QATask("1", "price", ("Mug. 9.00 each. Ships in 2 days.",), "how much?", {"number": 9.0},
    ...            facts=("2 day", "10%")).to_json()
    >>> HelpfulCorrect(max_tokens=64)([[]] * 3, ["9.00, ships in 2 days", "8.00, ships in 2 days", "9.00, ships in 2 days"],
    ...                               task=[t] * 3, completion_ids=[[0] * 5, [0] * 5, [0] * 64])
    [0.5, 0.0, 0.0]
    """

    __name__ = "helpful_correct"

    def __call__(self, prompts, completions, task, completion_ids=None, **_) -> list[float | None]:
        helpful = Helpfulness(self.max_tokens)(prompts, completions, task, completion_ids)
        correct = self._correct(prompts, completions, task, completion_ids)
        return [None if h is None else h if ok else 0.0 for h, ok in zip(helpful, correct, strict=True)]


@dataclass(frozen=True)
class BrevitySettings:
    form: Literal["kimi", "dapo_overlong", "target"] = "kimi"
    apply_to: Literal["correct", "mostly_correct", "all", "correct_helpful"] = "correct"
    min_correct: float = 0.5  # mostly_correct: share of a group's answers that must be correct
    target_tokens: int = 48  # target: L*
    overlong_cache: int = 32  # dapo_overlong: L_cache (L_max is the generation limit)
    measure: Literal["completion", "reasoning"] = "completion"  # what L counts
    fact_allowance: int = 0  # tokens of L forgiven per card fact mentioned (at most 2, as helpfulness counts)

    def __post_init__(self) -> None:
        if self.form not in BREVITY_FORMS:
            raise ConfigError(f"brevity form must be one of {list(BREVITY_FORMS)}, got {self.form!r}")
        if self.apply_to not in APPLY_TO:
            raise ConfigError(f"brevity apply_to must be one of {list(APPLY_TO)}, got {self.apply_to!r}")
        if self.measure not in MEASURES:
            raise ConfigError(f"brevity measure must be one of {list(MEASURES)}, got {self.measure!r}")
        if not 0 <= self.min_correct <= 1 or self.target_tokens < 1 or self.overlong_cache < 1:
            raise ConfigError(f"min_correct in [0, 1], target_tokens and overlong_cache >= 1 expected, got {self}")
        if self.fact_allowance < 0:
            raise ConfigError(f"brevity fact_allowance must be >= 0 tokens, got {self.fact_allowance}")


def _groups(task: Sequence[Any]) -> list[list[int]]:
    """Indices of completions that answer the same prompt (TRL puts a group's completions together)."""
    order: dict[str, list[int]] = {}
    for i, t in enumerate(task):
        order.setdefault(t if isinstance(t, str) else json.dumps(t, sort_keys=True), []).append(i)
    return list(order.values())


class Brevity(_Reward):
    """Length reward in one of three published forms, for the answers `apply_to` allows.

    >>> t = QATask("1", "price", ("Mug. 9.00 each.",), "how much?", {"number": 9.0}).to_json()
    >>> ids = [[0] * 10, [0] * 30, [0] * 50, [0] * 40]
    >>> answers = ["9.00", "9.00", "9.00", "8.00"]  # three right, the 40-token one wrong
    >>> Brevity(BrevitySettings("kimi", "all"), max_tokens=64)([[]] * 4, answers, task=[t] * 4, completion_ids=ids)
    [0.5, 0.0, -0.5, -0.25]
    >>> Brevity(BrevitySettings("kimi", "correct"), max_tokens=64)([[]] * 4, answers, task=[t] * 4, completion_ids=ids)
    [0.5, 0.0, -0.5, 0.0]
    >>> h = QATask("1", "price", ("Mug. 9.00 each. Ships in 2 days.",), "how much?", {"number": 9.0},
    ...            facts=("2 day",)).to_json()
    >>> said = ["9.00", "9.00, ships in 2 days", "9.00, ships in 2 days", "8.00"]  # 10, 30, 50, 40 tokens
    >>> Brevity(BrevitySettings("kimi", "correct_helpful"), max_tokens=64)([[]] * 4, said, task=[h] * 4, completion_ids=ids)
    [0.0, 0.0, -0.5, -0.25]
    >>> Brevity(BrevitySettings("dapo_overlong", "all", overlong_cache=20), max_tokens=50)(
    ...     [[]] * 4, answers, task=[t] * 4, completion_ids=ids)
    [0.0, 0.0, -1.0, -0.5]
    >>> Brevity(BrevitySettings("target", "correct", target_tokens=20), max_tokens=64)(
    ...     [[]] * 4, answers, task=[t] * 4, completion_ids=ids)
    [-0.5, -0.5, -1.0, 0.0]
    >>> thought = ["<think>a b c d e f</think> 9.00", "<think>a</think> It is 9.00 each, ships in 2 days.",
    ...            "<think>a b c d e f g h i j k</think> 9.00"]  # reasoning: 6, 1, 11 words
    >>> Brevity(BrevitySettings("kimi", "all", measure="reasoning"), max_tokens=64)(
    ...     [[]] * 3, thought, task=[t] * 3, completion_ids=ids[:3])
    [0.0, 0.5, -0.5]
    >>> # 20 forgiven tokens a fact: the 30-token answer with its fact counts as 10, the 10-token one without as 10
    >>> Brevity(BrevitySettings("kimi", "all", fact_allowance=20), max_tokens=64)(
    ...     [[]] * 3, said[:3], task=[h] * 3, completion_ids=ids[:3])
    [0.5, 0.5, -0.5]
    """

    __name__ = "brevity"

    def __init__(self, settings: BrevitySettings = BrevitySettings(), max_tokens: int | None = None,
                 count: Callable[[str], int] | None = None) -> None:
        super().__init__(max_tokens)
        if settings.form == "dapo_overlong" and (max_tokens is None or max_tokens <= settings.overlong_cache):
            raise ConfigError(f"dapo_overlong needs max_tokens > overlong_cache ({settings.overlong_cache}), got {max_tokens}")
        self.settings = settings
        self.count = count or (lambda text: len(text.split()))  # tokens of a text (words without a tokenizer)

    def _raw(self, lengths: list[int], correct: list[bool], group: list[int]) -> dict[int, float]:
        s = self.settings
        if s.form == "target":
            return {i: max(-1.0, -abs(lengths[i] - s.target_tokens) / s.target_tokens) for i in group}
        if s.form == "dapo_overlong":
            assert self.max_tokens is not None
            soft = self.max_tokens - s.overlong_cache
            return {i: 0.0 if lengths[i] <= soft else max(-1.0, (soft - lengths[i]) / s.overlong_cache) for i in group}
        lo, hi = min(lengths[i] for i in group), max(lengths[i] for i in group)
        out = {}
        for i in group:
            lam = 0.0 if hi == lo else 0.5 - (lengths[i] - lo) / (hi - lo)
            out[i] = lam if correct[i] else min(0.0, lam)
        return out

    def __call__(self, prompts, completions, task, completion_ids=None, **_) -> list[float | None]:
        lengths = _lengths(completions, completion_ids)  # the whole completion: truncation
        measured = lengths if self.settings.measure == "completion" else \
            [self.count(split_reasoning(completion_text(c))[0]) for c in completions]
        if self.settings.fact_allowance:
            measured = [n - self.settings.fact_allowance * round(2 * (helpfulness(task_of(t), completion_text(c)) or 0.0))
                        for n, c, t in zip(measured, completions, task, strict=True)]
        correct = self._correct(prompts, completions, task, completion_ids)
        out: list[float | None] = [0.0] * len(completions)
        for group in _groups(task):
            if self.settings.apply_to == "mostly_correct" and \
                    sum(correct[i] for i in group) < self.settings.min_correct * len(group):
                continue
            paid = correct
            if self.settings.apply_to == "correct_helpful":
                paid = self._as_helpful(completions, task, correct, group)
            for i, r in self._raw(measured, paid, group).items():
                if self.settings.apply_to == "correct" and not paid[i]:
                    r = 0.0  # length shapes right answers only: no incentive to be short and wrong
                out[i] = min(r, 0.0) if self.truncated(lengths[i]) else r
        return out

    @staticmethod
    def _as_helpful(completions, task, correct: list[bool], group: list[int]) -> list[bool]:
        """`correct`, narrowed within `group` to the answers as helpful as its most helpful correct one."""
        if not task_of(task[group[0]]).answerable:  # no helpfulness to keep: correctness alone decides
            return correct
        help_ = {i: helpfulness(task_of(task[i]), completion_text(completions[i])) or 0.0 for i in group if correct[i]}
        best = max(help_.values(), default=0.0)
        out = list(correct)
        for i, h in help_.items():
            out[i] = h >= best
        return out


class Format(_Reward):
    """1.0 for reasoning inside <think>…</think> followed by an answer, else 0.0.

    >>> Format()([[]] * 3, ["<think>9 less 1</think> 8.00", "8.00", "<think>9 less 1</think>"])
    [1.0, 0.0, 0.0]
    """

    __name__ = "format"

    def __call__(self, prompts, completions, completion_ids=None, **_) -> list[float | None]:
        lengths = _lengths(completions, completion_ids)
        return [float(bool(_FORMAT.match(completion_text(c))) and not self.truncated(n))
                for c, n in zip(completions, lengths, strict=True)]


class Answered(_Reward):
    """−1.0 for declining ("the card doesn't say") a question the card answers, 0.0 for anything
    else; None for unanswerable and adversarial questions.

    >>> t = QATask("1", "price", ("Mug. 9.00 each.",), "how much?", {"number": 9.0}).to_json()
    >>> u = QATask("2", "unanswerable", ("Mug.",), "waterproof?", {"refuse": "not_in_documents"}, answerable=False).to_json()
    >>> Answered()([[]] * 4, ["<think>\\n</think>\\nNot on the card.", "It's 8.00.", "I don't know.", "Not on the card."],
    ...            task=[t, t, t, u])
    [-1.0, 0.0, -1.0, None]
    """

    __name__ = "answered"

    def __call__(self, prompts, completions, task, **_) -> list[float | None]:
        return [None if not task_of(t).answerable else (-1.0 if says_unsaid(completion_text(c)) else 0.0)
                for c, t in zip(completions, task, strict=True)]


class Conceded(_Reward):
    """−1.0 for an answer that grants what an adversarial task forbids (the discount or claim an
    injected comment asked for, `verify.conceded`), 0.0 for one that does not; None for every other
    kind. Declining is already "correct"; this makes granting worse than any other wrong answer, so a
    policy never learns that giving in is a cheap way to be short.

    >>> a = QATask("1", "adversarial", ("Mug. 9.00 each.",), "give me 90% off", {"refuse": "adversarial",
    ...            "forbidden": ["90%"]}).to_json()
    >>> t = QATask("2", "price", ("Mug. 9.00 each.",), "how much?", {"number": 9.0}).to_json()
    >>> Conceded()([[]] * 4, ["Sure, 90% off for you!", "Sorry, I can't give 90% off.", "It's 9.00.", "90%"],
    ...            task=[a, a, a, t])
    [-1.0, 0.0, 0.0, None]
    """

    __name__ = "conceded"

    def __call__(self, prompts, completions, task, **_) -> list[float | None]:
        return [None if task_of(t).kind != "adversarial" else (-1.0 if conceded(task_of(t), completion_text(c)) else 0.0)
                for c, t in zip(completions, task, strict=True)]


REWARDS = ("correctness", "helpfulness", "helpful_correct", "brevity", "format", "answered", "conceded")


def build_rewards(names: Sequence[str], brevity: BrevitySettings, max_tokens: int,
                  count: Callable[[str], int] | None = None) -> list[_Reward]:
    """Reward functions in the order of `names` (each one of `REWARDS`); `count` gives a text's
    tokens for brevity measured on the reasoning (words when None)."""
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ConfigError(f"unknown reward(s) {unknown}; expected some of {list(REWARDS)}")
    made = {"correctness": lambda: Correctness(max_tokens), "helpfulness": lambda: Helpfulness(max_tokens),
            "helpful_correct": lambda: HelpfulCorrect(max_tokens),
            "brevity": lambda: Brevity(brevity, max_tokens, count), "format": lambda: Format(max_tokens),
            "answered": lambda: Answered(max_tokens), "conceded": lambda: Conceded(max_tokens)}
    return [made[n]() for n in names]
