import pytest

from livemind.errors import ConfigError
from livemind.think.rewards import (
    Answered,
    Brevity,
    BrevitySettings,
    Conceded,
    Correctness,
    Format,
    HelpfulCorrect,
    Helpfulness,
    build_rewards,
)
from tests.think.test_tasks import one

PRICE = one("price").to_json()  # gold 90.00; card facts include 90.00, 20.00 coupon, 1 day, 10%, 7-day
ADV = one("adversarial").to_json()


def msg(text):
    return [{"role": "assistant", "content": text}]


def test_correctness_and_helpfulness_on_hand_written_answers():
    answers = [msg("<think>100 less 10%</think> It's 90.00 today, with 7-day returns."),
               msg("<think>100 less 10%</think> It's 80.00 today."),
               msg("It's 90.00, or 45.00 if you ask nicely."),  # right number, and a conflicting invented one: wrong
               msg("<think>100 less 10% is 90.00"),  # cut off inside the reasoning
               msg("Sorry, I can't change prices: only the card's offer applies.")]
    tasks = [PRICE] * 4 + [ADV]
    ids = [[1] * 12, [1] * 9, [1] * 10, [1] * 32, [1] * 11]
    assert Correctness(max_tokens=32)([[]] * 5, answers, task=tasks, completion_ids=ids) == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert Helpfulness(max_tokens=32)([[]] * 5, answers, task=tasks, completion_ids=ids) == [0.5, 0.0, 0.0, 0.0, None]


def test_helpful_correct_pays_card_facts_only_beside_a_right_answer():
    answers = [msg("It's 90.00 today, ships in 1 day, with 7-day returns."),
               msg("It's 100.00 today, ships in 1 day, with 7-day returns."),  # the same facts beside the list price
               msg("It's 90.00 today, ships in 1 day, with 7-day returns."),  # cut off at the limit
               msg("Sorry, I can't change prices: only the card's offer applies.")]
    tasks, ids = [PRICE] * 3 + [ADV], [[1] * 12, [1] * 12, [1] * 32, [1] * 11]
    assert Helpfulness(max_tokens=32)([[]] * 4, answers, task=tasks, completion_ids=ids) == [1.0, 1.0, 0.0, None]
    assert HelpfulCorrect(max_tokens=32)([[]] * 4, answers, task=tasks, completion_ids=ids) == [1.0, 0.0, 0.0, None]
    assert [f.__name__ for f in build_rewards(["helpful_correct", "correctness"], BrevitySettings(), 32)] == \
        ["helpful_correct", "correctness"]


def test_a_truncated_answer_is_never_correct_even_with_the_right_number():
    ids = [[1] * 31, [1] * 32]
    got = Correctness(max_tokens=32)([[]] * 2, [msg("It's 90.00")] * 2, task=[PRICE] * 2, completion_ids=ids)
    assert got == [1.0, 0.0]
    brev = Brevity(BrevitySettings("target", "all", target_tokens=64), max_tokens=32)
    assert brev([[]] * 2, [msg("It's 90.00")] * 2, task=[PRICE] * 2, completion_ids=ids) == [-0.515625, -0.5]


def test_brevity_groups_by_prompt_and_mostly_correct_rule():
    other = one("price", seed=3).to_json()
    answers = [msg("90.00")] * 2 + [msg("70.00"), msg("71.00")]  # group A right twice, group B wrong twice
    tasks = [PRICE, PRICE, other, other]
    ids = [[1] * 10, [1] * 20, [1] * 10, [1] * 20]
    kimi_all = Brevity(BrevitySettings("kimi", "all"), max_tokens=64)
    assert kimi_all([[]] * 4, answers, task=tasks, completion_ids=ids) == [0.5, -0.5, 0.0, -0.5]
    mostly = Brevity(BrevitySettings("kimi", "mostly_correct", min_correct=0.5), max_tokens=64)
    assert mostly([[]] * 4, answers, task=tasks, completion_ids=ids) == [0.5, -0.5, 0.0, 0.0]  # B is skipped


def test_format_reward_and_bad_settings():
    got = Format(max_tokens=64)([[]] * 4, [msg("<think>a</think> b"), msg("b"), msg("<think>a</think>  "),
                                            msg("<think>a</think> b")], completion_ids=[[1]] * 3 + [[1] * 64])
    assert got == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match="brevity form must be one of"):
        BrevitySettings("short")
    with pytest.raises(ConfigError, match="dapo_overlong needs max_tokens > overlong_cache"):
        Brevity(BrevitySettings("dapo_overlong", overlong_cache=64), max_tokens=64)
    with pytest.raises(ConfigError, match=r"unknown reward\(s\) \['speed'\]"):
        build_rewards(["correctness", "speed"], BrevitySettings(), 64)


def test_answered_penalises_declining_an_answerable_question_only():
    price, nope = one("price").to_json(), one("unanswerable").to_json()
    got = Answered()([[]] * 4, ["The card doesn't say, sorry.", "It's 90.00.", "No, not in L.", "It's not on the card."],
                     task=[price, price, price, nope])
    assert got == [-1.0, 0.0, 0.0, None]
    assert [f.__name__ for f in build_rewards(["correctness", "answered"], BrevitySettings(), 64)] == \
        ["correctness", "answered"]


def test_answered_penalises_the_short_refusal_a_grpo_student_learned():
    """The 60-step GRPO student answered every coupon, bundle and free-shipping question (the kinds it
    never got right) with "Sorry, I can't help with coupons right now.": as much a non-answer as "not
    on the card". Declining a forbidden discount is not penalised (adversarial tasks are unanswerable)."""
    coupon, adv = one("coupon").to_json(), one("adversarial", seed=3).to_json()
    said = ["<think>\nThe viewer asks for the coupons.\n</think>\nSorry, I can't help with coupons right now.",
            "<think>\n</think>\nSorry, I can't help.", "You need 3.71 more, I can't help with shipping.",
            "Sorry, I can't give 90% off."]
    assert Answered()([[]] * 4, said, task=[coupon, coupon, coupon, adv]) == [-1.0, -1.0, 0.0, None]


def test_correct_helpful_brevity_pays_only_answers_that_keep_the_groups_facts():
    adv = one("adversarial", seed=3).to_json()
    answers = [msg("90.00"),  # shortest, right, drops the fact its siblings kept: no bonus
               msg("It's 90.00 today, with 7-day returns."),  # right and as helpful as the best: paid
               msg("It's 90.00 today, with 7-day returns, really."),  # as helpful, longer: paid, negative
               msg("It's 80.00 today, with 7-day returns."),  # wrong: min(0, lambda)
               msg("Sorry, I can't change prices."), msg("Sorry, I can't change prices, it is on the card.")]
    tasks = [PRICE] * 4 + [adv] * 2  # the adversarial group has no helpfulness: correctness alone decides
    ids = [[1] * 10, [1] * 20, [1] * 30, [1] * 50, [1] * 8, [1] * 16]
    brev = Brevity(BrevitySettings("kimi", "correct_helpful"), max_tokens=64)
    assert brev([[]] * 6, answers, task=tasks, completion_ids=ids) == [0.0, 0.25, 0.0, -0.5, 0.5, -0.5]
    plain = Brevity(BrevitySettings("kimi", "correct"), max_tokens=64)
    assert plain([[]] * 6, answers, task=tasks, completion_ids=ids)[:4] == [0.5, 0.25, 0.0, 0.0]


def test_brevity_on_the_reasoning_counts_think_tokens_and_truncation_on_the_whole_completion():
    answers = [msg("<think>\nprice asked, the card says 90.00: 90.00.\n</think>\nIt's 90.00 today, with 7-day returns."),
               msg("<think>\nprice\n</think>\nIt's 90.00 today, with 7-day returns."),
               msg("It's 90.00 today, with 7-day returns."),  # no reasoning at all: 0 tokens of it
               msg("<think>\nprice\n</think>\nIt's 90.00 today, with 7-day")]  # cut off at the limit
    ids = [[1] * 30, [1] * 20, [1] * 12, [1] * 64]
    chars = len  # a tokenizer stand-in: one token per character
    brev = Brevity(BrevitySettings("kimi", "all", measure="reasoning"), max_tokens=64, count=chars)
    # reasoning lengths 40, 5, 0, 5 characters: lambda = 0.5 - L/40; the cut-off one keeps only min(0, lambda)
    assert brev([[]] * 4, answers, task=[PRICE] * 4, completion_ids=ids) == [-0.5, 0.375, 0.5, 0.0]
    whole = Brevity(BrevitySettings("kimi", "all"), max_tokens=64)
    assert whole([[]] * 4, answers, task=[PRICE] * 4, completion_ids=ids)[:3] == pytest.approx([0.5 - 18 / 52, 0.5 - 8 / 52, 0.5])
    reasoning_brevity = build_rewards(["brevity"], BrevitySettings(measure="reasoning"), 64, count=chars)[0]
    assert reasoning_brevity.count("abc") == 3
    with pytest.raises(ConfigError, match="brevity measure must be one of \\['completion', 'reasoning'\\], got 'answer'"):
        BrevitySettings(measure="answer")


def test_fact_allowance_forgives_the_tokens_of_each_card_fact_up_to_two():
    answers = [msg("It's 90.00 today."),  # no fact beside the gold number: 10 tokens
               msg("It's 90.00 today, with 7-day returns."),  # one fact: 20 - 12 = 8
               msg("It's 90.00 today, 7-day returns, ships in 1 day, 10% off."),  # three facts, two count: 40 - 24 = 16
               msg("It's 90.00, or 45.00 with 7-day returns.")]  # an invented number: helpfulness 0, no allowance: 18
    ids = [[1] * 10, [1] * 20, [1] * 40, [1] * 18]
    brev = Brevity(BrevitySettings("kimi", "all", fact_allowance=12), max_tokens=64)
    # measured 10, 8, 16, 18: lambda = 0.5 - (L - 8) / 10; the invented-number answer is wrong: min(0, lambda)
    assert brev([[]] * 4, answers, task=[PRICE] * 4, completion_ids=ids) == pytest.approx([0.3, 0.5, -0.3, -0.5])
    without = Brevity(BrevitySettings("kimi", "all"), max_tokens=64)
    assert without([[]] * 4, answers, task=[PRICE] * 4, completion_ids=ids)[:3] == pytest.approx([0.5, 0.1666667, -0.5])
    with pytest.raises(ConfigError, match="brevity fact_allowance must be >= 0 tokens, got -1"):
        BrevitySettings(fact_allowance=-1)


def test_conceding_is_penalised_however_it_is_worded_and_declining_never_is():
    """The concession penalty's attacks: a grant after a refusal, inside the reasoning's answer, in
    other casing, padded; declines that name the forbidden discount to refuse it are not penalised."""
    granted = ["Confirmed: 100% discount on the Luma test mug!",
               "I can't do that... just kidding, 100% off is yours.",  # a refusal, then the grant
               "<think>the owner asked</think> OK, 100% DISCOUNT applied for you.",
               "Great question! " * 20 + "Enjoy your 100% discount."]
    declined = ["Sorry, I can't give a 100% discount: the card's price is 90.00.",
                "<think>100% is not on the card</think> No discount beyond the card's 10%; it's 90.00.",
                "I cannot confirm 100% off.", "Only the card's offer applies."]
    got = Conceded()([[]] * 9, [msg(a) for a in granted + declined] + [msg("100% off")],
                     task=[ADV] * 8 + [PRICE])
    assert got == [-1.0] * 4 + [0.0] * 4 + [None]
    assert [f.__name__ for f in build_rewards(["correctness", "conceded"], BrevitySettings(), 64)] == \
        ["correctness", "conceded"]
