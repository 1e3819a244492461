import dataclasses

import pytest
import torch

from livemind.errors import ConfigError
from livemind.think.grpo import GRPOSettings, RewardError, guarded, token_counter, train_grpo
from livemind.think.rewards import BrevitySettings, build_rewards, completion_text
from tests.think.test_tasks import one
from tests.think.tiny_lm import tiny_llama, tiny_tokenizer

TASKS = [one("price"), one("stock"), one("spec"), one("adversarial")]


def letters(prompts, completions, **kw):  # a random tiny model earns nothing from the host rewards: add spread
    return [len(completion_text(c)) / 100 for c in completions]


def tiny_settings(**kw):
    base = dict(rewards={"correctness": 1.0, "helpfulness": 0.5, "brevity": 0.5, "format": 0.2}, num_generations=4,
                prompts_per_step=2, steps_per_generation=1, max_tokens=12, lr=5e-2, lora=False,
                brevity=BrevitySettings("kimi", "all"))
    return GRPOSettings(**(base | kw))


def test_one_grpo_step_moves_the_weights_and_logs_every_reward(tmp_path):
    torch.manual_seed(0)
    model, tok = tiny_llama(), tiny_tokenizer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lines = []
    cfg = tiny_settings()

    count = token_counter(tok)
    assert count("<think>") == len(tok("<think>", add_special_tokens=False)["input_ids"]) > 0
    brevity = dataclasses.replace(cfg.brevity, measure="reasoning")  # the tokenizer counts the reasoning
    funcs = [*build_rewards(list(cfg.rewards), brevity, cfg.max_tokens, count), letters]
    trained, history = train_grpo(model, tok, TASKS, cfg, tmp_path, lines.append, reward_funcs=funcs, max_steps=1)
    assert len(history) == 1
    row = history[0]
    for name in ("correctness", "helpfulness", "brevity", "format", "letters"):
        assert f"rewards/{name}/mean" in row
    assert row["reward_std"] > 0
    assert any(not torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert lines and lines[0].strip().startswith("step 1/1  reward ")


def test_a_step_with_no_answer_a_reward_applies_to_still_logs_the_others(tmp_path):
    # `conceded` scores adversarial answers only: a generation without one has no mean for it (None)
    cfg = tiny_settings(rewards={"correctness": 1.0, "conceded": 1.0})
    lines = []

    funcs = [*build_rewards(list(cfg.rewards), cfg.brevity, cfg.max_tokens), letters]
    _, history = train_grpo(tiny_llama(), tiny_tokenizer(), [one("price"), one("stock")], cfg, tmp_path, lines.append,
                            reward_funcs=funcs, max_steps=1)
    assert history[0]["rewards/conceded/mean"] is None
    assert lines[0].strip().startswith("step 1/1  reward ") and "conceded" not in lines[0] and "correctness" in lines[0]


def test_a_raising_reward_fails_the_step_with_its_name(tmp_path):
    def flaky(prompts, completions, **kw):
        raise ValueError("judge offline")

    flaky.__name__ = "flaky_judge"
    with pytest.raises(RewardError, match="reward function 'flaky_judge' failed: ValueError: judge offline"):
        train_grpo(tiny_llama(), tiny_tokenizer(), TASKS, tiny_settings(), tmp_path, reward_funcs=[flaky], max_steps=1)
    short = guarded(lambda prompts, completions, **kw: [1.0])
    with pytest.raises(RewardError, match="returned 1 values"):
        short([[]] * 2, completions=["a", "b"])


@pytest.mark.parametrize("rewards, message", [
    ({"correctness": -1.0, "brevity": 1.0}, "correctness"),
    ({"correctness": 0.0, "brevity": 0.0}, "all zero"),
    ({"speed": 1.0}, "unknown objective"),
])
def test_bad_reward_weights_are_refused(rewards, message):
    with pytest.raises(ConfigError, match=message):
        GRPOSettings(rewards=rewards)
