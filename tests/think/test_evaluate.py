import math

import pytest

from livemind.think.backends import Completion
from livemind.think.evaluate import active_parameters, by_kind, compute_reduction, paired_intervals, score, summarize
from livemind.think.tasks import QATask

PRICE = QATask("p", "price", ("Mug (home). 9.00 each. Ships in 2 days.",), "how much is the mug?", {"number": 9.0},
               facts=("2 day",))
NOPE = QATask("u", "unanswerable", ("Mug (home). 9.00 each.",), "is it waterproof?", {"refuse": "not_in_documents"},
              answerable=False)


def words(text: str) -> int:
    return len(text.split())


def test_scoring_counts_tokens_truncation_and_compute_exactly():
    completions = [Completion("<think>list price less 10%</think> It's 9.00 and ships in 2 days.", 20, 0.5),
                   Completion("<think>the card does not say", 32, 0.7),  # cut at the limit: wrong whatever it says
                   Completion("Sorry, the card does not say.", 8, 0.3),
                   Completion(None, 0, 0.0, error="timeout")]
    s = score([PRICE, PRICE, NOPE, NOPE], completions, words, max_tokens=32)
    assert [x.correct for x in s] == [True, False, True, False]
    assert [x.truncated for x in s] == [False, True, False, False]
    assert [(x.reasoning_tokens, x.answer_tokens) for x in s] == [(4, 7), (5, 0), (0, 6), (0, 0)]
    r = summarize(s, active_params=1000)
    assert r["correct"] == 0.5 and r["truncated"] == 0.25 and r["unknown"] == 0.5  # cut off and failed
    assert r["tokens_mean"] == 15.0 and r["tokens_median"] == 14.0 and r["tokens_p90"] == pytest.approx(28.4)
    assert r["compute_per_answer"] == 2 * 1000 * 15.0
    assert r["helpful"] == pytest.approx((0.5 + 0.0) / 2)  # answerable only: one of two extra facts, then none
    assert r["helpful_correct"] == pytest.approx((0.5 + 0.0) / 2)  # the helpful answer is also the right one
    assert math.isnan(r["em"]) and r["unsaid"] == 0.0  # the unanswerable task's "does not say" is right there
    assert by_kind(s) == {"price": {"n": 2, "correct": 0.5, "tokens": 26.0},
                          "unanswerable": {"n": 2, "correct": 0.5, "tokens": 4.0}}


def test_unsaid_counts_non_answers_to_answerable_questions_only():
    s = score([PRICE, PRICE, PRICE, NOPE], [Completion("<think>\n\n</think>\nNot on the card.", 9),
                                            Completion("I don't know, sorry.", 5), Completion("It's 9.00.", 4),
                                            Completion("Not on the card.", 4)], words, max_tokens=32)
    r = summarize(s, active_params=1000)
    assert r["unsaid"] == pytest.approx(2 / 3) and r["correct"] == 0.5  # PRICE 1 of 3 right, NOPE right


def test_helpful_correct_scores_the_facts_beside_a_wrong_answer_zero():
    members = QATask("m", "price", ("Mug (home). 9.00 each, 8.00 for members. Ships in 2 days.",), "how much is the mug?",
                     {"number": 9.0}, facts=("2 day",))
    s = score([members, members], [Completion("It's 9.00 and ships in 2 days.", 7),
                                   Completion("It's 8.00 and ships in 2 days.", 7)], words, max_tokens=32)  # 8.00: members'

    r = summarize(s, active_params=1000)
    assert [x.correct for x in s] == [True, False]
    assert r["helpful"] == 0.5 and r["helpful_correct"] == 0.25  # one fact of two on each; only the first is right


def test_compute_reduction_splits_distillation_and_brevity():
    r = compute_reduction({"tokens_mean": 300.0}, {"tokens_mean": 200.0}, {"tokens_mean": 80.0}, 30e9, 3e9)
    assert r == {"distillation": pytest.approx(15.0), "brevity": pytest.approx(2.5), "total": pytest.approx(37.5)}


def test_active_parameters_of_dense_and_moe_models():
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    from tests.think.tiny_lm import tiny_llama

    dense = tiny_llama()
    assert active_parameters(dense) == sum(p.numel() for p in dense.parameters())
    moe = Qwen3MoeForCausalLM(Qwen3MoeConfig(vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                             num_experts=4, num_experts_per_tok=2, head_dim=16))
    total = sum(p.numel() for p in moe.parameters())
    experts = 2 * 4 * 3 * 32 * 16  # layers x experts x (gate, up, down) x hidden x expert width
    assert active_parameters(moe) == total - experts // 2


def test_paired_intervals_bracket_the_measured_change_and_need_the_same_tasks():
    tasks = [PRICE] * 6 + [NOPE] * 2
    before = score(tasks, [Completion("It's 9.00 and ships in 2 days.", 20)] * 3 + [Completion("It's 8.00.", 20)] * 3
                   + [Completion("Not on the card.", 10)] * 2, words, max_tokens=32)
    after = score(tasks, [Completion("It's 9.00.", 10)] * 5 + [Completion("It's 8.00.", 10)]
                  + [Completion("Not on the card.", 5)] * 2, words, max_tokens=32)
    same = paired_intervals(before, before, resamples=200)
    assert same == {"length_ratio": (1.0, 1.0), "correct": (0.0, 0.0), "helpful": (0.0, 0.0), "helpful_correct": (0.0, 0.0)}
    r = paired_intervals(before, after, resamples=500)
    assert r["length_ratio"] == (0.5, 0.5)  # every answer exactly half as long
    b, a = summarize(before, 1), summarize(after, 1)
    for key in ("correct", "helpful", "helpful_correct"):  # the interval holds the measured change
        assert r[key][0] <= a[key] - b[key] <= r[key][1]
    assert r["correct"][0] >= 0 < r["correct"][1]  # two answers turned right, none turned wrong
    assert -0.5 <= r["helpful"][0] < r["helpful"][1] <= 0  # three answers had a fact (0.5 each); none has now
    assert paired_intervals(before, after, resamples=500) == r  # seeded
    with pytest.raises(ValueError, match="the same tasks"):
        paired_intervals(before, after[::-1])
