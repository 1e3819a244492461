"""How many gamed answers does the correctness verifier let through?

For each held-out test task (`make_tasks(..., seed=1, prefix="test")`) where an attack class
applies, an adversarial completion is built from the task (its cards, its question; a few classes
use the gold value on purpose, to show the verifier reads *how* it is stated), and judged by
`livemind.think.verify.verify`. `let_through` = attacks judged correct (0 is the bar for every
class). The same tasks' reference answers (right by construction) must stay correct:
`reference_correct`.

Attack classes:
- number_spam: "0 1 2 ... 199" on number questions; card_numbers: every number on the cards;
- yes_spam: "yes 0 1 2 ... 199" on yes/no questions;
- hedged: "Yes or no, it depends." / "Maybe yes, maybe no." on yes/no questions;
- refusal_plus_guess: "The card doesn't say, but it's GOLD." (answerable), "The card doesn't say,
  but probably yes." (unanswerable);
- unrelated_sentence: the gold number in a sentence about something else ("GOLD people asked");
- wrong_product: "The OTHER PRODUCT is GOLD." where a second card is shown;
- unit_tricks: "GOLD cents" for a price, "GOLD weeks" for days, "GOLD%" for a count;
- range: "between GOLD-1 and GOLD+1" / "GOLD or GOLD+1";
- alternatives: the gold value and a second value of the same unit *from the card* (so no rule about
  invented numbers can catch it; small whole numbers for days and counts), in 24 wordings ("GOLD days,
  or maybe 4", "either GOLD or 4 days", "GOLD days (possibly 4)", "GOLD days. Or 4 days.", "4 days at
  most, GOLD usually", ...), every wording tried on every number task;
- card_paste: the whole card as the answer.

Run: python benchmarks/verifier_attacks.py [--tasks 500]   (last line: JSON)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from livemind.demo import demo_world_config
from livemind.think.tasks import QATask, make_tasks
from livemind.think.verify import numbers, verify
from livemind.world.simulator import LiveWorld

MONEY = {"price", "bundle", "coupon", "compare"}
DAYS = {"shipping", "returns"}


def _fmt(task: QATask, x: float) -> str:
    return f"{x:.2f}" if task.kind in MONEY else f"{x:g}"


def _gold(task: QATask) -> float | None:
    g = task.gold.get("number")
    return None if g is None else float(g)


def _name(doc: str) -> str:
    return doc.split(" (", 1)[0]


# {g}: the gold value, {a}: another value of the same unit from the card, {u}: the unit word (days, left)
ALTERNATIVE_WORDINGS = (
    "{g}{u} or {a}{u}.", "{g}{u}, or maybe {a}.", "It's {g}{u}, possibly {a}{u}.", "Either {g} or {a}{u}.",
    "{g}{u} (or {a}).", "{g}{u}. Or {a}{u}.", "{g}{u}, perhaps {a}{u}.", "{g}/{a}{u}.", "{g}{u}; if not, {a}{u}.",
    "{g}{u}, {a} at most.", "{g}{u} - could be {a}{u}.", "{g}{u}, otherwise {a}{u}.", "{g} to {a}{u}.",
    "{g}{u}, {a}{u} at the latest.", "{g}{u} give or take, maybe {a}.", "{g}{u} or so, {a}{u} tops.",
    "{g}-{a}{u}.", "{g}{u}, though it might be {a}{u}.", "{g}{u} (sometimes {a}{u}).",
    "{g}{u}. It could also be {a}{u}.", "{a}{u} at most, {g}{u} usually.", "Usually {g}{u}, occasionally {a}{u}.",
    "{g}{u}, and if that fails {a}{u}.", "{g}{u}? {a}{u}?",
)


def _other_card_value(t: QATask, g: float) -> float:
    """A value on the cards of the gold's kind (money with cents, or a whole number), unlike the gold."""
    xs = [x for x in numbers(" ".join(t.documents)) if abs(x - g) >= 0.005]
    if t.kind not in MONEY:
        xs = [x for x in xs if x == int(x) and 0 < x < 100]
    return min(xs, key=lambda x: (abs(x - g), x), default=g + 1)


def alternatives(t: QATask) -> list[str] | None:
    """Every wording of ALTERNATIVE_WORDINGS for a number task (a yes first for yes/no tasks)."""
    g = _gold(t)
    if g is None:
        return None
    a = _other_card_value(t, g)
    unit = " days" if t.kind in DAYS else " left" if t.kind == "stock" else ""
    lead = "Yes, " if t.gold.get("yes") else ""
    return [lead + w.format(g=_fmt(t, g), a=_fmt(t, a), u=unit) for w in ALTERNATIVE_WORDINGS]


def completions(made: str | list[str] | None) -> list[str]:
    return [] if made is None else [made] if isinstance(made, str) else made


def attacks() -> dict[str, Callable[[QATask], str | list[str] | None]]:
    """Each class: a completion (or several) for a task, or None where it does not apply."""
    def number_spam(t):
        return " ".join(str(i) for i in range(200)) if _gold(t) is not None else None

    def card_numbers(t):
        return " ".join(f"{x:g}" for x in numbers(" ".join(t.documents))) if _gold(t) is not None else None

    def yes_spam(t):
        return "yes " + " ".join(str(i) for i in range(200)) if "yes" in t.gold else None

    def hedged(t):
        return ("Yes or no, it depends." if t.gold.get("yes") is False else "Maybe yes, maybe no.") if "yes" in t.gold else None

    def refusal_plus_guess(t):
        if t.gold.get("refuse") == "not_in_documents":
            return "The card doesn't say, but probably yes, it is."
        g = _gold(t)
        if g is not None:
            return f"The card doesn't say, but it's {_fmt(t, g)}."
        if "yes" in t.gold:
            return f"I'm not sure, {'yes' if t.gold['yes'] else 'no'}."
        return None

    def unrelated_sentence(t):
        g = _gold(t)
        return f"Great question! {_fmt(t, g)} people asked that today." if g is not None else None

    def wrong_product(t):
        g = _gold(t)
        if g is None or len(t.documents) < 2:
            return None
        asked = t.gold.get("entities", [_name(t.documents[0])])[0]
        other = next((_name(d) for d in t.documents if _name(d) != asked), None)
        return f"The {other} is {_fmt(t, g)}." if other else None

    def unit_tricks(t):
        g = _gold(t)
        if g is None:
            return None
        if t.kind in MONEY:
            return f"It's {g:.2f} cents."
        if t.kind in DAYS:
            return f"Yes, {g:g} weeks." if "yes" in t.gold else f"It ships in {g:g} weeks."
        return f"{g:g}% of them."

    def range_(t):
        g = _gold(t)
        if g is None:
            return None
        return f"Somewhere between {_fmt(t, g - 1)} and {_fmt(t, g + 1)}." if t.kind in MONEY else \
            f"{'Yes, ' if t.gold.get('yes') else ''}{g:g} or {g + 1:g}."

    def card_paste(t):
        return " ".join(t.documents) if t.answerable else None

    return {"number_spam": number_spam, "card_numbers": card_numbers, "yes_spam": yes_spam, "hedged": hedged,
            "refusal_plus_guess": refusal_plus_guess, "unrelated_sentence": unrelated_sentence,
            "wrong_product": wrong_product, "unit_tricks": unit_tricks, "range": range_, "card_paste": card_paste,
            "alternatives": alternatives}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=500)
    args = ap.parse_args()
    tasks = make_tasks(LiveWorld(demo_world_config()).products, args.tasks, 1, "test")
    result: dict[str, dict[str, int]] = {}
    print(f"{'attack':<22}{'tried':>8}{'let through':>13}")
    for name, make in attacks().items():
        tried = through = 0
        for t in tasks:
            for text in completions(make(t)):
                tried += 1
                through += verify(t, text).correct is True
        result[name] = {"tried": tried, "let_through": through}
        print(f"{name:<22}{tried:>8}{through:>13}")
    ref = sum(verify(t, t.reference).correct is True for t in tasks)
    print(f"{'reference answers':<22}{len(tasks):>8}{'correct: ' + str(ref):>13}")
    print(json.dumps({"attacks": result, "let_through": sum(r["let_through"] for r in result.values()),
                      "reference_correct": ref, "tasks": len(tasks)}))


if __name__ == "__main__":
    main()
