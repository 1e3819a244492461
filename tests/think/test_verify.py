import pytest

from livemind.think.verify import exact_match, f1, helpfulness, numbers, verify
from tests.think.test_tasks import Q, one


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
