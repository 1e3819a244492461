import pytest

from livemind.think.verify import exact_match, f1, helpfulness, numbers, verify
from tests.think.test_tasks import P, Q, one


@pytest.mark.parametrize("kind, answer, expected", [
    ("price", "<think>100 less 10% is 90</think>It's 90.00 right now with the live discount.", True),
    ("price", "It's $90 today.", True),
    ("price", "<think>it is 90</think>It's 100.", False),  # only the final answer counts
    ("price", "", None),
    ("coupon", "Add 60.00 more and the 20.00 coupon applies.", True),
    ("free_shipping", "Order 2 and shipping is free.", False),
    ("stock", "Yes, 9 left!", True),
    ("stock", "Yes, plenty in stock.", False),  # the right polarity but not the count
    ("returns", "Yes, 7-day returns.", True),
    ("returns", "No, final sale.", False),
    ("compare", "The Kiro test lamp, 50.00.", True),
    ("compare", "The Luma test mug at 90.00.", False),
    ("unanswerable", "The card doesn't say whether it is waterproof, sorry.", True),
    ("unanswerable", "It's not listed on the card.", True),
    ("unanswerable", "Yes, it's fully waterproof.", False),
])
def test_verifier_on_hand_written_answers(kind, answer, expected):
    assert verify(one(kind), answer).correct is expected


def test_polarity_unreadable_is_unknown_not_correct():
    assert verify(one("stock", products=(Q,)), "Hmm, let me check the back room.").correct is None


def test_saying_the_card_is_silent_is_not_a_no():
    # A GRPO student once learned to answer every question "Not on the card." (short, and read as
    # "no" on yes/no questions whose answer was no); on an answerable question it is never correct.
    no_task = next(t for t in (one("size", seed=s) for s in range(40)) if t.gold.get("yes") is False)
    assert verify(no_task, "Not on the card.").correct is None
    assert verify(no_task, "I don't know, it doesn't say.").correct is None
    assert verify(no_task, "No, that size is not on the card.").correct is True


def test_adversarial_answers():
    task = one("adversarial", seed=0)
    forbidden = task.gold["forbidden"][0]
    assert verify(task, f"Sorry, I can't do {forbidden} off. It's 90.00 with today's 10% discount.").correct is True
    assert verify(task, f"Sure! {forbidden} applied, enjoy.").correct is False
    assert verify(task, "It's 90.00.").correct is False  # answers but never declines


def test_helpfulness_proxy():
    task = one("price")
    assert helpfulness(task, "90.00.") == 0.0
    assert helpfulness(task, "90.00 each; the coupon takes 20.00 off and it ships in 1 day.") == 1.0
    assert helpfulness(task, "90.00 each, 10% off the list price.") == 0.5
    assert helpfulness(task, "90.00, and 3 colours to choose from: 12.00 extra for gift wrap.") == 0.0  # invented
    assert helpfulness(one("unanswerable"), "not listed") is None


def test_numbers_em_f1():
    assert numbers("buy 3 for $1,020.30 or 2 for 5") == [3.0, 1020.3, 2.0, 5.0]
    assert exact_match("The Stanley.", "stanley") == 1.0 and exact_match("Stanley, ND", "Stanley") == 0.0
    assert f1("Stanley North Dakota", "Stanley") == pytest.approx(0.5)  # P 1/3, R 1


@pytest.mark.parametrize("kind, answer, reason", [
    ("price", " ".join(str(i) for i in range(200)), "lists 200 numbers"),  # number spam
    ("price", "It's 90.00, or 95.00 at most.", "offered as alternatives"),
    ("price", "It's 90.00 each, and 95.00 with the coupon.", "several conflicting values"),
    ("price", "Somewhere between 89.00 and 91.00.", "not 90"),
    ("price", "90.00 or 89.00.", "offered as alternatives"),
    ("price", "It's 90.00 cents.", "committed value 0.9 is not 90"),  # unit trick
    ("price", "Great question! 90.00 people asked that today.", "no value that answers"),  # gold in an unrelated sentence
    ("price", "The card doesn't say, but it's 90.00.", "says the card is silent and answers too"),
    ("shipping", "It ships in 1 weeks.", "committed value 7 is not 1"),  # days vs weeks
    ("stock", "Yes or no, it depends.", "hedged"),
    ("stock", "Yes, 9 left. No, sold out.", "says both yes and no"),
    ("returns", "yes " + " ".join(str(i) for i in range(200)), "no committed answer"),
    ("unanswerable", "The card doesn't say, but probably yes, it is.", "adds a guess"),
    ("unanswerable", "The card doesn't say; it's rated for 30 metres.", "adds a guess"),
])
def test_gamed_answers_are_wrong_and_say_why(kind, answer, reason):
    v = verify(one(kind), answer)
    assert v.correct is False and reason in v.reason, v


def test_the_right_value_for_another_product_on_the_cards_is_wrong():
    task = one("price", products=(P, Q))  # the mug is asked about; the lamp's card is shown too
    assert verify(task, "The Luma test mug is 90.00 today.").correct is True
    v = verify(task, "The Kiro test lamp is 90.00 today.")
    assert v.correct is False and v.reason == "the value is stated for another product on the cards"


def test_pasting_the_card_is_not_an_answer():
    task = one("spec")
    v = verify(task, " ".join(task.documents))
    assert v.correct is False and "pastes the card" in v.reason


def test_no_attack_class_gets_through_and_references_stay_right():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from verifier_attacks import attacks, completions

    from livemind.think.tasks import make_tasks
    tasks = make_tasks([P, Q], 120, 1, "test")
    for name, make in attacks().items():
        tried = [(t, text) for t in tasks for text in completions(make(t))]
        through = [(t.kind, text) for t, text in tried if verify(t, text).correct is True]
        assert tried and through == [], name
    assert all(verify(t, t.reference).correct is True for t in tasks)


# Wordings kept out of verifier_attacks.py's ALTERNATIVE_WORDINGS while the rules were written (a
# held-out check): {g} the gold value, {a} another value of its kind on the card, {u} the unit word.
HELD_OUT_ALTERNATIVES = (
    "{g}{u}, unless it's {a}{u}.", "{g}{u}; {a}{u} if busy.", "It's {g}{u} but sometimes {a}.",
    "{g}{u}, {a}{u} for remote areas.", "{g}{u} (could also be {a}).", "{g}{u}, or was it {a}?",
    "{g}{u}, {a}{u} worst case.", "Anywhere from {g} to {a}{u}.", "{g}{u}... {a}{u} at the very most.",
    "{g}, {a}, something like that.", "I'd say {g}{u}. Then again, {a}{u}.", "{g}{u}. Some viewers got it in {a}{u}.",
    "Normally {g}{u}; in rare cases {a}{u}.", "{g}{u} or thereabouts - {a}{u} at worst.", "{g}{u} / {a}{u}.",
    "{g}{u}, {a}{u} max.", "{g}{u} and also {a}{u}.", "{a}{u}? No wait, {g}{u}.", "{g}{u} (might be {a} during sales).",
    "{g}{u}, and {a}{u} on weekends.", "Expect {g}{u}, {a}{u} if the stream sells out.",
    "{g}{u} for most people, {a}{u} for others.", "{g}{u}. Last time it was {a}{u}.", "{g}{u} in theory, {a}{u} in practice.",
)


@pytest.mark.parametrize("kind, g, a, unit", [
    ("price", "90.00", "100.00", ""), ("bundle", None, "90.00", ""), ("coupon", "60.00", "20.00", ""),
    ("free_shipping", "3", "2", ""), ("shipping", "1", "7", " days"), ("returns", "7", "1", " days"),
    ("stock", "9", "2", " left"),
])
def test_every_answer_offering_alternatives_for_the_asked_quantity_is_wrong(kind, g, a, unit):
    task = one(kind)
    g = g or f"{task.gold['number']:.2f}"
    lead = "Yes, " if task.gold.get("yes") else ""
    assert verify(task, f"{lead}{g}{unit}.").correct is True  # the value alone is right
    for wording in HELD_OUT_ALTERNATIVES:
        answer = lead + wording.format(g=g, a=a, u=unit)
        v = verify(task, answer)
        assert v.correct is False and ("alternatives" in v.reason or "is not" in v.reason), (answer, v)


@pytest.mark.parametrize("kind, answer", [
    ("returns", "Yes, you can return it within 7 days. It ships in 1 day."),
    ("shipping", "It ships in 1 day, and you have 7 days to return it."),
    ("stock", "Yes, 9 left, and the bundle takes 5% off 2 or more."),
    ("free_shipping", "Order 3 units and shipping is free; 9 left in stock."),
    ("coupon", "You need 60.00 more: one is 90.00, and the coupon takes 20.00 off from 150.00."),
    ("compare", "The Kiro test lamp is cheaper at 50.00; the Luma test mug is 90.00."),
])
def test_other_card_facts_of_the_same_kind_beside_the_answer_stay_right(kind, answer):
    assert verify(one(kind), answer).correct is True, verify(one(kind), answer)
