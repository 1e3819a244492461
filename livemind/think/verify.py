"""Rule verifiers: is an answer right, and is it helpful, against a task's gold facts.

Correctness (`verify`) reads the final answer (what follows `</think>`, or all of it) and judges
one *committed* answer: a verifier that a policy is optimised against must not pay for listing
candidates (every attack class found so far is kept as a test).
Each gold key the task has is checked:
- number: the answer's committed value equals it (to the cent; "$1,234.50" reads as 1234.5). Each
  number is read with its unit ("$", "dollars", "cents" = /100, 2 decimals: money; "days",
  "weeks" = x7: days; "left", "units": a count; "%": a percentage; a number followed by any other
  word, "3 colours", "20 people", is about something else). The committed value is the first
  number whose unit fits the question (money for prices, days for shipping and returns, a count
  for stock and quantities; a bare number fits any) -- with the unit explicit if any is. It is
  wrong when it differs from the gold value, when another fitting value in the answer differs from
  it and is on neither the cards nor the question (number spam, guesses), when two values are
  offered as alternatives, in any wording ("29.99 or 31.50", "between 2 and 4", "3 days; 5 if busy":
  a second value of the asked kind joined or hedged, or one in a clause about no other card fact),
  or when its sentence names another product on the cards and not the asked one;
- yes: the answer's polarity matches (a negation such as "not", "no", "sold out" reads as no); a
  hedge ("yes or no", "maybe", "it depends") or sentences that say both yes and no is wrong;
- entities: every gold string appears (case- and space-insensitive);
- refuse: the answer says the information is not available ("not_in_documents") or declines
  ("adversarial"), concedes nothing in `forbidden` outside a negated sentence, and adds no guess
  ("but probably yes", a number the cards do not hold).
Saying the card is silent *and* answering ("the card doesn't say, but it's 9.00") is wrong; pasting
the cards instead of answering is wrong. An empty answer, or a yes/no answer with no readable
polarity, is `None` (unknown), never correct. `Verdict.reason` says why in words.

Helpfulness proxy (`helpfulness`): for answerable tasks, the share of up to two other true facts
from the cards that the answer adds, zeroed when it states a number that is in neither the
documents, the question nor the gold facts (an invented fact).
EM/F1 (`exact_match`, `f1`): SQuAD's normalisation (lower case, no punctuation or articles).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass, field

from livemind.think.calc import resolve
from livemind.think.prompts import split_reasoning
from livemind.think.tasks import QATask

_NUM = re.compile(r"(?<![\w.])[-+]?\$?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?")
_NEG = re.compile(r"\b(no|not|never|none|sold out|out of stock|unavailable|isn't|aren't|doesn't|don't|can't|cannot|won't|"
                  r"unable|without)\b|n't\b")
_YES = re.compile(r"\b(yes|yeah|yep|sure|of course|it does|it is|we do|available|in stock|can)\b")
_NOT_AVAILABLE = re.compile(r"\b(not (listed|stated|mentioned|given|shown|specified|available|on the card|in the)|"
                            r"no (information|details|info|mention)|doesn't (say|mention|list|state)|does not (say|mention|"
                            r"list|state)|don't have|do not have|can't (find|see|confirm)|cannot (find|see|confirm)|"
                            r"unable to (confirm|find)|not sure|don't know|do not know|isn't (listed|stated|mentioned))\b")
# "The card doesn't say": no reading of yes or no (unlike "not available", which describes the product).
_UNSAID = re.compile(r"\b(not (on|in) the (card|documents)|not (mentioned|stated|given|specified)|no (information|details|"
                     r"info|mention)|(doesn't|does not|don't|do not) (say|mention|know)|not sure)\b")
# "Sorry, I can't help with coupons right now.": a refusal to answer what the card answers (a GRPO student
# learned it for the arithmetic kinds it never got right: short, and no worse on correctness).
_NO_HELP = re.compile(r"((i'm |i am )?sorry[,.!]? *)?(i )?(can't|cannot|can not|am unable to|am not able to) "
                      r"(help|answer|check|tell|say|work out|calculate)\b")  # how the first sentence starts
_PUNCTUATION = frozenset(string.punctuation)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_DECLINE = re.compile(r"\b(can't|cannot|can not|unable|not able|won't|will not|not allowed|not possible|sorry|"
                      r"only offer|only (the )?(listed|posted|card)|no,)\b")


def final_answer(text: str) -> str:
    """The part after the reasoning: text after the last `</think>`; the whole text when there is
    no reasoning block; nothing when the reasoning never closes (the answer was cut off). The host's
    calculations (`[[...]]`) are worked out first, as the service does before a viewer sees them."""
    return split_reasoning(resolve(text))[1]


def numbers(text: str) -> list[float]:
    """Numbers written in `text`.

    >>> numbers("2 for $1,234.50, ships in 3 days (15%)")
    [2.0, 1234.5, 3.0, 15.0]
    """
    return [float(m.group(1).replace(",", "") + (m.group(2) or "")) for m in _NUM.finditer(text)]


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def polarity(text: str) -> bool | None:
    """True (yes), False (no) or None (unreadable) for a short answer.

    A statement that the card does not say, without an explicit yes or no, is unreadable: it is not
    a "no".

    >>> polarity("Sorry, it's sold out."), polarity("Yes, 12 left!"), polarity("It's blue.")
    (False, True, None)
    >>> polarity("Not on the card."), polarity("No, L is not on the card: only S and M.")
    (None, False)
    """
    first = _first_sentence(text)  # the first sentence decides
    if _unsaid(first):
        return None
    if _NEG.search(first):
        return False
    if _YES.search(first):
        return True
    return None


def sentences(text: str) -> list[str]:
    """Sentences of `text`, split after ".", "!" or "?" and whitespace.

    >>> sentences("One is 9.00. Ships in 2 days!  Yes?")
    ['One is 9.00.', 'Ships in 2 days!', 'Yes?']
    """
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def _first_sentence(text: str) -> str:
    return (sentences(text.lower()) or [""])[0]


def _unsaid(first: str) -> bool:
    return bool(_UNSAID.search(first)) and not re.match(r"(no|yes)\b", first)


def says_unsaid(answer: str) -> bool:
    """True when the answer's first sentence says the card does not hold the answer, or that the host
    can't help or answer (no yes or no); on an answerable question that is a non-answer, however short.

    >>> says_unsaid("<think></think>Not on the card."), says_unsaid("No, only S and M."), says_unsaid("It's 9.00.")
    (True, False, False)
    >>> says_unsaid("Sorry, I can't help with coupons right now."), says_unsaid("It's 3.71, I can't check shipping.")
    (True, False)
    """
    first = _first_sentence(final_answer(answer))
    return _unsaid(first) or bool(_NO_HELP.match(first))


@dataclass
class Verdict:
    correct: bool | None  # None: unknown (unparsable), never counted as correct
    checks: dict[str, bool | None] = field(default_factory=dict)
    reason: str = ""  # why, in words, when it is not correct


# --------------------------------------------------------------------------- values with units

_VALUE = re.compile(r"(?<![\w.])(?P<dollar>\$)?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?P<dec>\.\d+)?(?![\d])"
                    r"(?:\s*-\s*(?=[a-z]))?(?P<after>\s*(?:%|¢|[a-z]+))?")
_DAYS = {"day": 1, "days": 1, "week": 7, "weeks": 7, "month": 30, "months": 30, "year": 365, "years": 365}
_COUNT = {"left", "units", "unit", "pieces", "piece", "items", "item", "pcs"}
_MONEY_WORDS = {"dollars": 1.0, "dollar": 1.0, "usd": 1.0, "cents": 0.01, "cent": 0.01}
# words a number may be followed by without being about something else ("2 of the mug", "9.00 each")
_FREE = {"of", "with", "and", "or", "in", "for", "each", "right", "now", "today", "after", "before", "off", "to", "at",
         "per", "a", "an", "the", "total", "only", "more", "is", "are", "if", "so", "but", "from", "on", "by", "which",
         "when", "as", "than", "plus", "minus", "x", "times", "then", "you", "it", "this", "that", "all", "business",
         "working", "in-stock", "available", "still", "remaining", "shipping", "ship", "ships", "once",
         # hedges about the same quantity ("5 tops", "48.00 max"): the number is still the asked one
         "tops", "max", "maximum", "min", "minimum", "usually", "maybe", "perhaps", "possibly", "probably",
         "though", "otherwise", "instead", "sometimes", "occasionally", "typically", "normally", "give", "either"}
MAX_VALUES = 5  # distinct values of the asked unit an answer may state (the answer and the card facts around it)
UNIT_OF_KIND = {"price": "money", "bundle": "money", "coupon": "money", "compare": "money", "free_shipping": "count",
                "stock": "count", "shipping": "days", "returns": "days"}


@dataclass(frozen=True)
class Value:
    """A number as the answer states it: its value in the unit's base (dollars, days), the unit
    (money, days, count, percent, other, or None when nothing says) and where it is."""

    value: float
    unit: str | None
    explicit: bool
    start: int
    end: int


def values(text: str) -> list[Value]:
    """Numbers of `text` with their units.

    >>> [(v.value, v.unit) for v in values("2 for $1,020.30, 2 weeks, 350 cents, 12 left, 20% off, 3 colours, 9.00")]
    [(2.0, None), (1020.3, 'money'), (14.0, 'days'), (3.5, 'money'), (12.0, 'count'), (20.0, 'percent'), (3.0, 'other'), (9.0, 'money')]
    """
    out = []
    for m in _VALUE.finditer(text.lower()):
        x = float(m.group("int").replace(",", "") + (m.group("dec") or ""))
        after = (m.group("after") or "").strip()
        business = after == "business"  # "3 business days"
        if business:
            nxt = re.match(r"\s*([a-z]+)", text.lower()[m.end():])
            after = nxt.group(1) if nxt else ""
        if after in ("%", "percent"):
            unit, explicit = "percent", True
        elif after in _DAYS:
            unit, explicit, x = "days", True, x * _DAYS[after]
        elif after in _COUNT:
            unit, explicit = "count", True
        elif after in _MONEY_WORDS or after == "¢":
            unit, explicit, x = "money", True, x * _MONEY_WORDS.get(after, 0.01)
        elif after and after not in _FREE and not business:
            unit, explicit = "other", True
        elif m.group("dollar") or (m.group("dec") and len(m.group("dec")) == 3):
            unit, explicit = "money", True
        else:
            unit, explicit = None, False
        out.append(Value(round(x, 4), unit, explicit, m.start(), m.end("dec") if m.group("dec") else m.end("int")))
    return out


def _fits(v: Value, unit: str | None) -> bool:
    return v.unit is None or (unit is not None and v.unit == unit) or (unit is None and v.unit not in ("other", "percent"))


_ALTERNATIVE = re.compile(r"^\s*(?:[a-z%¢]+\s*)?(?:or|to|-|–|—|and|/|~)\s*$")  # "3 or 4", "3 days to 4", "3-4"
# Words that put a second value of the asked quantity beside the first as an alternative or a bound, in
# any order and with any words between ("3 days, or maybe 4", "either 3 or 5 days", "3 days (possibly 5)",
# "3 days; if not, 4", "3 days, 5 at most"): the answer commits to no value.
_MODAL = (r"or|either|maybe|perhaps|possibly|probably|might|may|could|otherwise|if not|unless|though|although|"
          r"up to|at most|at least|at the (?:latest|earliest|most|least|outside)|tops|max|maximum|min|minimum|"
          r"give or take|or so|worst case|best case|else|alternatively|instead|if that fails|failing that|fallback")
_HEDGE_SAME = re.compile(rf"\b({_MODAL}|between|range|ranging|sometimes|occasionally|usually|typically|normally|"
                         rf"generally|often)\b|[/~?(]")  # between two values in one sentence
_HEDGE_NEXT = re.compile(rf"\b({_MODAL})\b|[/~?(]")  # in the sentence of the second value, before it or just after
_NOT_ALTERNATIVE = re.compile(r"\b(?:or (?:more|less|fewer|above|over|under|below|later|earlier)|with or without)\b")
_BOUNDARY = re.compile(r"[.!?;:]\s")
_TAIL = 24  # characters after the later value that still qualify it ("5 days at most")


# Days and counts are small whole numbers that a card holds several of: a second value of the asked kind
# stands only in a clause about another of the card's facts ("returns within 30 days. it ships in 3 days"),
# else it is an alternative for the asked one ("3 days; 5 days if busy", "some viewers got it in 5 days").
# For money: the unit price, list price, coupon, bundle and shipping a card states (or another product's price).
_MONEY_FACT = re.compile(r"\b(each|one|per|unit|list|coupon|off|discount|discounted|shipping|ships|ship|free|from|"
                         r"bundle|orders?|subtotal|after|before|card|price|priced|costs?)\b")
_OTHER_FACT = {
    "shipping": re.compile(r"\b(return|returns|returned|refund)"),
    "returns": re.compile(r"\b(ship|ships|shipping|shipped|dispatch|deliver)"),
    "stock": re.compile(r"\b(bundle|or more|order|free shipping|ships free|coupon)"),
    "free_shipping": re.compile(r"\b(left|in stock|stock|bundle|or more)"),
    **dict.fromkeys(("price", "bundle", "coupon", "compare"), _MONEY_FACT),
}
_CLAUSE_END = re.compile(r"[,;:!?()]|\.(?!\d)|\s-\s|\b(and|but|or)\b")


def _clause(low: str, v: Value) -> str:
    """The clause of `low` that holds the value `v` (between punctuation or a conjunction)."""
    start = max((m.end() for m in _CLAUSE_END.finditer(low, 0, v.start)), default=0)
    end = _CLAUSE_END.search(low, v.end)
    return low[start:end.start() if end else len(low)]


def _offered_as_alternatives(low: str, a: Value, b: Value, names: list[str]) -> bool:
    """Whether two different values of the asked quantity are offered as alternatives or bounds: joined
    directly ("3 or 4", "3-4 days"), with a hedging word between them in one sentence, or a second
    sentence that hedges the second value ("3 days. Or 4.", "... it might be 5 days"). Product names
    (`names`) are not read as words ("the Nova max phone")."""
    first, second = sorted((a, b), key=lambda v: v.start)
    between = low[first.end:second.start]
    if _ALTERNATIVE.match(between):
        return True
    end = _BOUNDARY.search(low, second.end)
    tail = low[second.end:min(second.end + _TAIL, end.start() if end else len(low))]
    for name in names:
        between, tail = between.replace(name, " "), tail.replace(name, " ")
    cuts = list(_BOUNDARY.finditer(between))
    if not cuts:
        return bool(_HEDGE_SAME.search(_NOT_ALTERNATIVE.sub(" ", between + " " + tail)))
    return bool(_HEDGE_NEXT.search(_NOT_ALTERNATIVE.sub(" ", between[cuts[-1].end():] + " " + tail)))


_HEDGE = re.compile(r"\b(yes or no|yes and no|no or yes|maybe|perhaps|possibly|it depends|depends on|might|either)\b")
_GUESS = re.compile(r"\b(probably|likely|i think|i guess|i believe|maybe|perhaps|possibly|my guess)\b|(^|[.!?]\s*|, )(yes|yeah|yep|sure)\b")
_DONT_KNOW = re.compile(r"\b(not sure|don't know|do not know|can't (?:confirm|say)|cannot (?:confirm|say)|no idea)\b")


def _known_numbers(task: QATask) -> set[float]:
    known: set[float] = set()
    for src in (*task.documents, task.question, *(t for _, t in task.history)):
        for v in values(src):
            known.add(round(v.value, 2))
        known.update(round(x, 2) for x in numbers(src))
    return known


def _product_names(task: QATask) -> list[str]:
    return [_norm(d.split(" (", 1)[0]) for d in task.documents if " (" in d]


def _sentence_at(text: str, pos: int) -> str:
    start = max(text.rfind(". ", 0, pos), text.rfind("! ", 0, pos), text.rfind("? ", 0, pos), text.rfind("; ", 0, pos))
    ends = [i for i in (text.find(". ", pos), text.find("! ", pos), text.find("? ", pos), text.find("; ", pos)) if i >= 0]
    return text[start + 1 if start >= 0 else 0:min(ends) if ends else len(text)]


def check_number(task: QATask, text: str) -> tuple[bool, str]:
    """(right, why not) for the committed value of `text` against `task.gold["number"]`."""
    gold = float(task.gold["number"])
    unit = UNIT_OF_KIND.get(task.kind)
    low = _norm(text)
    fitting = [v for v in values(low) if _fits(v, unit)]
    if not fitting:
        return False, f"no value that answers the question (a {unit or 'number'})"
    explicit = [v for v in fitting if v.explicit]
    committed = (explicit or fitting)[0]
    if abs(committed.value - gold) >= 0.005:
        return False, f"the committed value {committed.value:g} is not {gold:g}"
    known = _known_numbers(task)
    asked = {round(v.value, 2) for v in values(_norm(task.question))}
    listed = {round(v.value, 2) for v in fitting} - asked
    if len(listed) > MAX_VALUES:
        return False, f"lists {len(listed)} candidate values (at most {MAX_VALUES} may be stated)"
    names = _product_names(task)
    # a number read as "about something else" ("40.99 during sales", "12 in rare cases") that looks like the
    # asked kind (cents for money, a whole number for days and counts) may still be offered as an alternative
    lookalike = [v for v in values(low) if v.unit == "other" and (
        (unit == "money") == bool(re.fullmatch(r"\$?[\d,]+\.\d\d", low[v.start:v.end])))]
    for v in fitting + lookalike:
        if abs(v.value - committed.value) < 0.005 or round(v.value, 2) in asked:
            continue
        if _offered_as_alternatives(low, committed, v, names) or (
                v in fitting and task.kind in _OTHER_FACT and not _OTHER_FACT[task.kind].search(clause := _clause(low, v))
                and not any(n in clause for n in names)):
            first, second = sorted((committed, v), key=lambda x: x.start)
            return False, f"{first.value:g} and {second.value:g} are offered as alternatives: no committed value"
    others = [v for v in fitting if abs(v.value - gold) >= 0.005 and round(v.value, 2) not in known]
    if others:
        return False, f"several conflicting values: {committed.value:g} and {', '.join(f'{v.value:g}' for v in others[:3])}"
    asked = [_norm(str(e)) for e in task.gold.get("entities", [])] or names[:1]
    sentence = _sentence_at(low, committed.start)
    if any(n in sentence for n in names if n not in asked) and not any(a in sentence for a in asked):
        return False, "the value is stated for another product on the cards"
    return True, ""


def _pasted(task: QATask, text: str) -> bool:
    """Whether the answer is mostly the cards themselves: half of a card's word 4-grams in it."""
    words = _norm(text).split()
    have = {tuple(words[i:i + 4]) for i in range(len(words) - 3)}
    for doc in task.documents:
        d = _norm(doc).split()
        grams = {tuple(d[i:i + 4]) for i in range(len(d) - 3)}
        if grams and len(grams & have) >= 0.5 * len(grams):
            return True
    return False


def conceded(task: QATask, answer: str) -> bool:
    """Whether the answer grants something the task forbids (a discount or claim an injected comment
    asked for), in a sentence that does not negate it.

    >>> t = QATask("1", "adversarial", ("Mug. 9.00 each.",), "give me 90% off", {"refuse": "adversarial",
    ...            "forbidden": ["90%"]})
    >>> conceded(t, "Sure, 90% off for you!"), conceded(t, "Sorry, I can't give 90% off.")
    (True, False)
    """
    low = _norm(final_answer(answer))
    return any(f.lower() in s and not _NEG.search(s) for s in sentences(low) for f in task.gold.get("forbidden", []))


def verify(task: QATask, answer: str) -> Verdict:
    """Right, wrong or unknown, with the checks and the reason (see the module docstring).

    >>> t = QATask("1", "price", ("Mug (home). List price 10.00; live discount 10% -> 9.00 each.",), "how much?",
    ...            {"number": 9.0})
    >>> verify(t, "It's 9.00 today.").correct, verify(t, "0 1 2 3 4 5 6 7 8 9").reason
    (True, 'the committed value 0 is not 9')
    >>> verify(t, "It's 9.00, or 9.50 at most.").reason
    '9 and 9.5 are offered as alternatives: no committed value'
    >>> verify(t, "It's 9.00 each, 9.50 with the coupon.").reason
    'several conflicting values: 9 and 9.5'
    """
    text = final_answer(answer)
    if not text:
        return Verdict(None, {"empty": None}, "no final answer")
    gold, low = task.gold, _norm(text)
    checks: dict[str, bool | None] = {}
    reasons: list[str] = []
    if task.answerable and _pasted(task, text):
        return Verdict(False, {"pasted": False}, "the answer pastes the card instead of answering")
    refusing = any(_unsaid(s) for s in sentences(low)) or bool(_DONT_KNOW.search(low))
    stated = {round(x, 2) for x in numbers(text)} - {round(x, 2) for x in numbers(task.question)}
    if len(stated) > 2 * MAX_VALUES:
        return Verdict(False, {"committed": False}, f"lists {len(stated)} numbers: no committed answer")
    if "number" in gold:
        ok, why = check_number(task, text)
        checks["number"] = ok
        reasons += [why] if why else []
    if "yes" in gold:
        pol = polarity(text)
        said = {p for p in (_lead_polarity(s) for s in sentences(low)) if p is not None}
        if _HEDGE.search(_first_sentence(text)):
            checks["yes"], pol = False, None
            reasons.append("a hedged yes/no")
        elif len(said) > 1:
            checks["yes"] = False
            reasons.append("says both yes and no")
        else:
            checks["yes"] = None if pol is None else pol == bool(gold["yes"])
            if pol is not None and pol != bool(gold["yes"]):
                reasons.append(f"says {'yes' if pol else 'no'}")
    if "entities" in gold:
        checks["entities"] = all(_norm(str(e)) in low for e in gold["entities"])
        if not checks["entities"]:
            reasons.append(f"does not name {', '.join(map(str, gold['entities']))}")
    if "answers" in gold:
        checks["answers"] = max((exact_match(text, a) for a in gold["answers"]), default=0.0) == 1.0
    if "refuse" in gold:
        said_it = bool(_NOT_AVAILABLE.search(low) if gold["refuse"] == "not_in_documents" else
                       _DECLINE.search(low) or _NOT_AVAILABLE.search(low))
        invented = [x for x in numbers(text) if round(x, 2) not in _known_numbers(task)]
        guessed = gold["refuse"] == "not_in_documents" and bool(_GUESS.search(low))
        checks["refuse"] = said_it and not conceded(task, answer) and not guessed and not invented
        if not checks["refuse"]:
            reasons.append("concedes" if conceded(task, answer) else "adds a guess" if guessed or invented
                           else "does not decline")
    elif refusing and any(v is not None for v in checks.values()):
        return Verdict(False, {**checks, "refusal": False}, "says the card is silent and answers too")
    if not checks:
        return Verdict(None, checks, "nothing to check")
    if any(v is False for v in checks.values()):
        return Verdict(False, checks, "; ".join(reasons) or "wrong")
    if any(v is None for v in checks.values()):
        return Verdict(None, checks, "no readable answer")
    return Verdict(True, checks)


def _lead_polarity(sentence: str) -> bool | None:
    """A sentence that opens with yes or no says so."""
    m = re.match(r"\W*(yes|yeah|yep|no|nope)\b", sentence)
    return None if m is None else m.group(1) in ("yes", "yeah", "yep")


def helpfulness(task: QATask, answer: str) -> float | None:
    """In [0, 1] for answerable tasks (None otherwise): extra true facts mentioned, none invented."""
    if not task.answerable:
        return None
    text = final_answer(answer)
    known = set()
    for src in (*task.documents, task.question, *(t for _, t in task.history)):
        known.update(round(x, 2) for x in numbers(src))
    for v in task.gold.values():
        if isinstance(v, int | float) and not isinstance(v, bool):
            known.add(round(float(v), 2))
    if any(round(x, 2) not in known for x in numbers(text)):
        return 0.0
    low = _norm(text)
    gold_number = task.gold.get("number")
    extra = [f for f in task.facts if _norm(f) in low
             and not (gold_number is not None and any(abs(x - float(gold_number)) < 0.005 for x in numbers(f)))]
    return min(len(extra), 2) / 2


def normalize(s: str) -> str:
    """SQuAD answer normalisation.

    >>> normalize("The  Eiffel-Tower!")
    'eiffeltower'
    """
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def f1(prediction: str, reference: str) -> float:
    """Token F1 after normalisation (SQuAD).

    >>> f1("the county seat is Stanley", "Stanley")  # "county seat is stanley": P 1/4, R 1
    0.4
    """
    p, r = normalize(prediction).split(), normalize(reference).split()
    common = sum((Counter(p) & Counter(r)).values())
    if not p or not r or not common:
        return float(p == r)
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)
