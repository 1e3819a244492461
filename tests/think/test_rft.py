import dataclasses
import math

import pytest
import torch

from livemind.errors import ConfigError
from livemind.think.backends import Completion
from livemind.think.judge import Judgement, LLMJudge, parse_score
from livemind.think.prompts import split_reasoning as split
from livemind.think.rft import SFTSettings, Trace, accept_report, finetune, reference_traces, select, sft_records
from tests.think.test_tasks import one
from tests.think.tiny_lm import tiny_llama, tiny_tokenizer


def trace(kind, text, tokens, correct, helpful=None):
    return Trace(one(kind), Completion(text, tokens), Judgement(correct, helpful))


def test_selection_rules_and_report():
    ts = [trace("price", "<think>a</think>90.00", 10, True, 0.0), trace("price", "<think>abc</think>90.00 each", 20, True, 1.0),
          trace("price", "100", 3, False), trace("stock", None, 0, None), trace("stock", "hmm", 2, None)]
    assert [t.completion.tokens for t in select(ts, "all")] == [10, 20]
    assert [t.completion.tokens for t in select(ts, "shortest")] == [10]
    assert [t.completion.tokens for t in select(ts, "most_helpful")] == [20]
    with pytest.raises(ConfigError, match="selection must be one of"):
        select(ts, "best")
    rep = accept_report(ts)
    assert rep["price"] == {"traces": 3, "accept_rate": 2 / 3, "failed": 0, "tokens_accepted": 15.0}
    assert rep["stock"]["accept_rate"] == 0.0 and rep["stock"]["failed"] == 1 and math.isnan(rep["stock"]["tokens_accepted"])
    assert rep["all"]["accept_rate"] == 2 / 5
    (row,) = sft_records(select(ts, "shortest"))
    assert row["completion"] == [{"role": "assistant", "content": "<think>\na\n</think>\n90.00"}]
    assert row["prompt"][-1] == {"role": "user", "content": "Viewer: how much is the Luma test mug right now?"}


class FixedReplies:
    model = "judge"

    def __init__(self, replies):
        self.replies = replies

    def generate(self, prompts, sampling):
        return [[Completion(self.replies[i % len(self.replies)])] for i in range(len(prompts))]


def test_llm_judge_unparsable_is_unknown():
    judge = LLMJudge(FixedReplies(["Correct.\nScore: 9", "I think it's fine"]))
    (a, b) = judge.judge([one("price"), one("stock")], ["90.00", "yes"])
    assert a.correct is True and b.correct is None  # never correct when the score does not parse
    assert parse_score("Score: 11") is None and parse_score("score = 3/10") == 0.3


def test_sft_step_lowers_the_loss_on_a_tiny_model(tmp_path):
    tok = tiny_tokenizer()
    rows = sft_records([trace("price", "<think>90 is 100 less 10%</think>It's 90.00 today.", 12, True)] * 8)
    model, losses = finetune(tiny_llama(), tok, rows, SFTSettings(lr=5e-3, batch_size=4, lora=False), tmp_path / "sft",
                             max_steps=12)
    assert len(losses) == 12 and losses[-1] < losses[0] - 1.0  # nats per completion token


def test_sft_with_lora_on_a_tiny_moe(tmp_path):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    moe = Qwen3MoeForCausalLM(Qwen3MoeConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                             moe_intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
                                             max_position_embeddings=256, head_dim=16,
                                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    before = {k: v.clone() for k, v in moe.state_dict().items()}
    rows = sft_records([trace("price", "<think>sum</think>It's 90.00.", 8, True)] * 4)
    model, losses = finetune(moe, tok, rows, SFTSettings(lr=1e-2, batch_size=2, lora=True, lora_r=4), tmp_path / "moe",
                             max_steps=4)
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    lora = [n for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]
    assert lora and any(not torch.equal(p, torch.zeros_like(p)) for n, p in model.named_parameters() if "lora_B" in n)
    merged = model.merge_and_unload().state_dict()
    assert any(not torch.equal(before[k], merged[k]) for k in before if k in merged)  # the adapters moved the weights



def test_sampled_traces_cut_off_at_the_limit_are_never_accepted():
    from livemind.think.backends import Sampling
    from livemind.think.rft import sample_traces

    class Teacher:
        model = "t"

        def generate(self, prompts, sampling):
            return [[Completion("It's 90.00 today", 5), Completion("It's 90.00 today and", 8)] for _ in prompts]

    traces = sample_traces([one("price")], Teacher(), Sampling(max_tokens=8, n=2))
    assert [t.judgement.correct for t in traces] == [True, True]
    assert [t.accepted for t in traces] == [True, False]


def test_reference_teacher_varies_length_keeps_answers_and_needs_references():
    tasks = [one("price"), one("spec"), one("free_shipping")]
    traces = reference_traces(tasks, 3, lambda text: len(text.split()), keep=0.5)
    assert [t.task.id for t in traces] == ["x"] * 9 and all(t.accepted for t in traces)
    assert [t.completion.text for t in traces[::3]] == [t.reference for t in tasks]
    answers = {split(t.completion.text)[1] for t in traces[:3]}
    assert answers == {split(tasks[0].reference)[1]}  # only the reasoning is thinned
    lengths = [t.completion.tokens for t in traces[:3]]
    assert lengths[0] > min(lengths[1:])  # 2 sentences each kept with p 0.5: some dropped at these seeds
    assert len({t.completion.text for t in traces[6:]}) == 1  # a calculation is never dropped: the answer reads it
    assert reference_traces(tasks, 3, len, keep=0.5)[1].completion.text == traces[1].completion.text  # seeded
    with pytest.raises(ConfigError, match="task 'x' has no reference solution"):
        reference_traces([dataclasses.replace(tasks[0], reference="")], 1, len)
