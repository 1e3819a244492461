import copy
import dataclasses

import numpy as np
import pytest
import torch

from livemind.config import from_dict
from livemind.errors import ConfigError, DataError
from livemind.rec.alignment.align import AlignConfig, RewardScorer, align, live_log_probs, live_states
from livemind.rec.alignment.reward_model import RewardModelConfig, train_reward_model
from livemind.rec.data.feedback import Impressions, ViewerState
from livemind.rec.data.room_signals import RoomSignals
from livemind.rec.model.generator import GeneratorConfig, OneLiveGenerator

TINY_GEN = GeneratorConfig(levels=2, codebook_size=8, d_model=16, n_heads=2, n_layers=1, max_history=5, level_weights=(1.0, 1.0))


@pytest.fixture(scope="module")
def setup(tiny_world, tiny_rec):
    _, world = tiny_world
    state = ViewerState.from_world(world)
    imp = Impressions.from_world(world, tiny_rec.frame, tiny_rec.codes, "test-v1", state)
    rm, _ = train_reward_model(RewardModelConfig(epochs=6, batch_size=256, history=5, lr=1e-2),  # rooms clearly differ
                               imp.take(np.flatnonzero(imp.time < tiny_rec.split)), tiny_rec.log,
                               world.viewers.num_rows, world.streamers.num_rows, 8)
    torch.manual_seed(0)
    return OneLiveGenerator(TINY_GEN).eval(), rm, state


@pytest.mark.parametrize("weights, message", [
    ({"click": -1.0}, "weight of 'click' must be finite and non-negative, got -1.0"),
    ({"clicks": 1.0}, r"unknown objective\(s\) \['clicks'\]"),
    ({"click": 0.0, "gift": 0.0}, "all zero"),
])
def test_bad_objective_weights_fail_at_config_time(weights, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(AlignConfig, {"objectives": weights})


def test_config_rejects_bad_combinations():
    with pytest.raises(ConfigError, match="group_size must be at least 2"):
        from_dict(AlignConfig, {"group_size": 1})
    with pytest.raises(ConfigError, match="aggregation: expected one of .sum_then_normalize., .normalize_then_sum., got .mean."):
        from_dict(AlignConfig, {"aggregation": "mean"})


def test_live_policy_is_a_distribution_over_live_rooms(setup, tiny_rec):
    gen, _, state = setup
    rows = tiny_rec.train_rows[:7]
    st = live_states(RoomSignals(tiny_rec.log, state, tiny_rec.live), rows, 5)
    lp = live_log_probs(gen, st)
    for b, r in enumerate(rows):
        live = tiny_rec.live.rooms(float(tiny_rec.log.time[r]))
        assert sorted(st.room[b][st.mask[b].numpy()].tolist()) == live.tolist()
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(7))
    assert torch.isinf(lp[~st.mask]).all()


@pytest.mark.parametrize("method", ["grpo", "dpo"])
def test_alignment_moves_the_policy_toward_the_best_live_rooms(setup, tiny_rec, method):
    gen, rm, state = setup
    cfg = AlignConfig(steps=60, batch_size=16, lr=3e-2, beta=0.01, method=method)
    res = align(cfg, gen, rm, state, tiny_rec.log, tiny_rec.live, tiny_rec.train_rows)
    assert any(not torch.equal(a, b) for a, b in zip(gen.state_dict().values(), res.model.state_dict().values()))
    assert abs(res.history[0]["value"] - res.history[0]["value_ref"]) < 1e-6  # measured before the first update
    assert res.history[-1]["kl"] > 0
    # on a spread of its training states: the reward-model value of the policy, against the pretrained
    # generator's and the best achievable (always picking the highest-valued live room)
    before, after, best = policy_values(gen, res.model, rm, state, tiny_rec, cfg)
    assert best > before
    assert after - before > 0.5 * (best - before)


def policy_values(gen, aligned, rm, state, tiny_rec, cfg) -> tuple[float, float, float]:
    """Reward-model value of the pretrained and aligned policies on a spread of training states,
    and the best achievable (always the highest-valued live room)."""
    st = live_states(RoomSignals(tiny_rec.log, state, tiny_rec.live), tiny_rec.train_rows[::20], 5)
    value = (RewardScorer(rm, state, tiny_rec.log, tiny_rec.live, cfg.names).candidates(st) * cfg.weights).sum(-1)
    with torch.no_grad():
        before = float((live_log_probs(gen, st).exp() * value).sum(1).mean())
        after = float((live_log_probs(aligned, st).exp() * value).sum(1).mean())
    return before, after, float(value.masked_fill(~st.mask, -1.0).max(1).values.mean())


def test_alignment_refuses_another_tokenizer_version(setup, tiny_rec):
    gen, rm, state = setup
    rm.tokenizer_version = "other"
    try:
        with pytest.raises(DataError, match="tokenizer versions disagree: reward model other, watch log test-v1"):
            align(AlignConfig(steps=1), gen, rm, state, tiny_rec.log, tiny_rec.live, tiny_rec.train_rows)
    finally:
        rm.tokenizer_version = "test-v1"


def test_the_policy_of_a_generator_with_a_live_room_prior_reads_the_signals(setup, tiny_rec):
    _, _, state = setup
    torch.manual_seed(1)
    gen = OneLiveGenerator(dataclasses.replace(TINY_GEN, room_signals=5)).eval()
    with torch.no_grad():
        gen.room_prior[-1].bias.zero_()
        gen.room_prior[-1].weight.fill_(0.5)  # the prior matters: not a near-zero initial output
    signals = RoomSignals(tiny_rec.log, state, tiny_rec.live)
    rows = tiny_rec.train_rows[:5]
    st = live_states(signals, rows, 5)
    rb = signals.batch(rows)
    torch.testing.assert_close(st.signals, rb.signals)
    with torch.no_grad():
        lp = live_log_probs(gen, st)
        want = torch.log_softmax(gen.room_scores(st.hist, st.sid, rb.signals).masked_fill(~st.mask, float("-inf")), 1)
        plain = torch.log_softmax(gen.sid_log_prob(st.hist, st.sid).masked_fill(~st.mask, float("-inf")), 1)
    torch.testing.assert_close(lp[st.mask], want[st.mask])
    assert (lp[st.mask] - plain[st.mask]).abs().max() > 0.05  # the signals change the policy


def test_alignment_tunes_a_generator_with_a_live_room_prior(setup, tiny_rec):
    _, rm, state = setup
    torch.manual_seed(0)
    gen = OneLiveGenerator(dataclasses.replace(TINY_GEN, room_signals=5)).eval()
    cfg = AlignConfig(steps=60, batch_size=16, lr=3e-2, beta=0.01)
    res = align(cfg, gen, rm, state, tiny_rec.log, tiny_rec.live, tiny_rec.train_rows)
    moved = {k for k, v in res.model.state_dict().items() if not torch.equal(v, gen.state_dict()[k])}
    assert any(k.startswith("room_prior.") for k in moved)  # the prior is tuned with the rest
    before, after, best = policy_values(gen, res.model, rm, state, tiny_rec, cfg)
    assert best > before
    assert after - before > 0.5 * (best - before)


@pytest.mark.slow
def test_the_aligned_cache_is_reused_only_with_the_same_generator_and_reward_model(setup, tiny_rec, tmp_path):
    from livemind.rec.alignment.pipeline import aligned_for

    gen, rm, state = setup
    cfg = AlignConfig(steps=2, batch_size=8)
    _, _, ran = aligned_for(tiny_rec, gen, rm, state, cfg, tmp_path / "a")
    assert ran
    _, history, ran = aligned_for(tiny_rec, gen, rm, state, cfg, tmp_path / "a")
    assert not ran and len(history) == 2
    other = copy.deepcopy(rm)
    with torch.no_grad():
        other.heads.bias.add_(0.1)  # a retrained reward model: the policy was aligned to another one
    _, _, ran = aligned_for(tiny_rec, gen, other, state, cfg, tmp_path / "a")
    assert ran
    _, _, ran = aligned_for(tiny_rec, gen, other, state, cfg, tmp_path / "a")
    assert not ran
    retrained = copy.deepcopy(gen)
    with torch.no_grad():
        retrained.bos.add_(0.1)  # a retrained generator of the same architecture: the cache is of another
    _, _, ran = aligned_for(tiny_rec, retrained, other, state, cfg, tmp_path / "a")
    assert ran
