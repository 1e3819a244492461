import math

import pytest
import torch

from livemind.align.advantages import group_advantages
from livemind.align.loss import dpo_loss, kl_k3, policy_loss
from livemind.align.objectives import aggregate, check_weights
from livemind.errors import ConfigError, DataError


def test_weights_rejects_unknown_negative_and_all_zero():
    with pytest.raises(ConfigError, match=r"unknown objective\(s\) \['clicks'\]"):
        check_weights({"clicks": 1.0}, ["click", "gift"])
    with pytest.raises(ConfigError, match="weight of 'gift' must be finite and non-negative, got -1.0"):
        check_weights({"click": 1.0, "gift": -1}, ["click", "gift"])
    with pytest.raises(ConfigError, match="all zero"):
        check_weights({"click": 0.0, "gift": 0}, ["click", "gift"])
    with pytest.raises(ConfigError, match="must be a number"):
        check_weights({"click": "lots"}, ["click"])


def test_sum_then_normalize_by_hand():
    r = torch.tensor([[1.0, 10.0], [0.0, 20.0], [2.0, float("nan")], [4.0, 0.0]])
    # rows: 1 + 0.5*10 = 6; 0 + 0.5*20 = 10; 2 + NaN(skipped) = 2; 4 + 0 = 4
    out = aggregate(r, torch.tensor([1.0, 0.5]), group_size=2, mode="sum_then_normalize")
    torch.testing.assert_close(out, torch.tensor([6.0, 10.0, 2.0, 4.0]))


def test_normalize_then_sum_by_hand():
    r = torch.tensor([[1.0, 10.0], [3.0, 30.0], [0.0, 5.0], [0.0, 1.0]])
    # group 1: col0 mean 2, std sqrt(2) -> z = ∓1/sqrt(2); col1 mean 20, std sqrt(200) -> ∓1/sqrt(2)
    #   weighted (1, 2): ∓(1/(sqrt(2)+1e-4) + 2*10/(sqrt(200)+1e-4)) ≈ ∓2.12132 (EPS 1e-4 in each std)
    # group 2: col0 all 0 -> z 0; col1 mean 3, std sqrt(8) -> ±2/sqrt(8) = ±0.707107 -> weighted ±1.414214
    out = aggregate(r, torch.tensor([1.0, 2.0]), group_size=2, mode="normalize_then_sum")
    a = 1 / (math.sqrt(2) + 1e-4) + 2 * 10 / (math.sqrt(200) + 1e-4)
    b = 2 * 2 / (math.sqrt(8) + 1e-4)
    torch.testing.assert_close(out, torch.tensor([-a, a, b, -b]), rtol=0, atol=1e-6)


def test_aggregate_bad_rows():
    with pytest.raises(DataError, match="row 1 has no applicable reward"):
        aggregate(torch.tensor([[1.0], [float("nan")]]), torch.tensor([1.0]), 2)
    with pytest.raises(DataError, match="do not split into groups of 2"):
        aggregate(torch.ones(3, 1), torch.tensor([1.0]), 2)


def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 3.0, 2.0, 2.0, 0.0, 6.0])
    # groups of 3: (1, 3, 2): mean 2, std 1 -> (-1, 1, 0)/(1+1e-4); (2, 0, 6): mean 8/3, std sqrt(28/3)
    g2 = torch.tensor([2.0, 0.0, 6.0]) - 8 / 3
    torch.testing.assert_close(group_advantages(r, 3, "group"),
                               torch.cat([torch.tensor([-1.0, 1.0, 0.0]) / 1.0001, g2 / (math.sqrt(28 / 3) + 1e-4)]),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(group_advantages(r, 3, "none"), torch.cat([torch.tensor([-1.0, 1.0, 0.0]), g2]))
    # batch std of (1, 3, 2, 2, 0, 6): mean 14/6, sum of squares 54 - 6*(7/3)^2 = 21.3333 -> var 4.26667
    torch.testing.assert_close(group_advantages(r, 3, "batch"),
                               torch.cat([torch.tensor([-1.0, 1.0, 0.0]), g2]) / (math.sqrt(64 / 15) + 1e-4),
                               rtol=0, atol=1e-6)
    assert group_advantages(torch.tensor([5.0, 5.0]), 2).tolist() == [0.0, 0.0]  # equal rewards: no NaN
    with pytest.raises(ConfigError, match="advantage scale must be one of"):
        group_advantages(r, 3, "global")


def test_policy_loss_by_hand():
    # two completions, two tokens each; the second token of completion 2 is padding
    logp = torch.tensor([[math.log(0.5), math.log(0.9)], [math.log(0.2), 0.0]])
    old = torch.tensor([[math.log(0.25), math.log(0.9)], [math.log(0.4), 0.0]])
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[True, True], [True, False]])
    # ratios: 2.0 (clipped to 1.2 for A>0 -> -1.2), 1.0 (-1.0); 0.5 (A<0: min(-1.0, 0.8*-2=-1.6) = -1.6 -> +1.6)
    # grpo: mean(mean(-1.2, -1.0), 1.6) = mean(-1.1, 1.6) = 0.25
    loss, stats = policy_loss(logp, old, adv, mask, loss_type="grpo")
    assert float(loss) == pytest.approx(0.25, abs=1e-6)
    assert stats.clip_fraction == pytest.approx(2 / 3)  # token 1 (ratio 2, A>0) and token 3 (ratio 0.5, A<0)
    # dapo: (-1.2 - 1.0 + 1.6) / 3 = -0.2; dr_grpo: -0.6 / (2 * 2) = -0.15
    assert float(policy_loss(logp, old, adv, mask, loss_type="dapo")[0]) == pytest.approx(-0.2, abs=1e-6)
    assert float(policy_loss(logp, old, adv, mask, loss_type="dr_grpo")[0]) == pytest.approx(-0.15, abs=1e-6)


def test_policy_loss_kl_term_by_hand():
    logp = torch.tensor([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]])
    # k3: d = log 0.25 - log 0.5 = -log 2; exp(d) - d - 1 = 0.5 + 0.693147 - 1 = 0.193147
    assert float(kl_k3(logp, ref)) == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)
    loss, stats = policy_loss(logp, logp, torch.tensor([0.0]), ref_logp=ref, beta=0.1)
    assert float(loss) == pytest.approx(0.1 * (0.5 + math.log(2) - 1), abs=1e-6)
    assert stats.kl == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)
    with pytest.raises(ConfigError, match="needs ref_logp"):
        policy_loss(logp, logp, torch.tensor([0.0]), beta=0.1)


def test_dpo_loss_by_hand():
    # margin = (−1 − −2) − (−3 − −2) = 1 + 1 = 2; β = 0.5 -> −log σ(1) = log(1 + e^−1) = 0.313262
    loss = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    assert float(loss) == pytest.approx(math.log1p(math.exp(-1)), abs=1e-6)


def test_policy_step_raises_bandit_reward():
    torch.manual_seed(0)
    rewards = torch.tensor([0.0, 0.2, 1.0, 0.1])  # arm 2 is best
    logits = torch.zeros(4, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=0.5)

    def expected() -> float:
        return float(torch.softmax(logits.detach(), 0) @ rewards)

    before = expected()
    for _ in range(20):
        logp_all = torch.log_softmax(logits, 0)
        arms = torch.multinomial(logp_all.exp().detach().expand(8, 4), 6, replacement=True).reshape(-1)  # 8 groups of 6
        logp = logp_all[arms][:, None]
        loss, _ = policy_loss(logp, logp.detach(), group_advantages(rewards[arms], 6))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert expected() > before + 0.3  # from 0.325 (uniform) toward 1.0
    assert int(logits.argmax()) == 2
