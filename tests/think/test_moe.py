"""Sparse upcycling: the MoE student computes what the dense one does at first, trains, routes,
and runs through evaluation and the serving decoder."""

from __future__ import annotations

import pytest
import torch

from livemind.errors import ConfigError
from livemind.think.evaluate import active_parameters
from livemind.think.moe import UpcycleConfig, expert_load, upcycle
from tests.think.tiny_lm import tiny_llama, tiny_moe, tiny_tokenizer


def test_the_upcycled_model_computes_what_the_dense_one_does():
    dense = tiny_llama(3).eval()
    moe = upcycle(dense, UpcycleConfig(experts=4, top_k=2))
    ids = torch.randint(3, len(tiny_tokenizer()), (2, 12))
    with torch.no_grad():
        want, got = dense(input_ids=ids).logits, moe(input_ids=ids).logits
    assert torch.allclose(want, got, atol=1e-5), (want - got).abs().max()
    # 2 layers x MLP (3 x 32 x 64) copied 4 times: 3 more copies in total, half of the 4 active per token
    mlp = 2 * 3 * 32 * 64
    dense_n = sum(p.numel() for p in dense.parameters())
    total = sum(p.numel() for p in moe.parameters())
    assert total == dense_n + 3 * mlp + 2 * 4 * 32  # + the routers (E x H per layer)
    assert active_parameters(moe) == total - 4 * mlp + 2 * mlp
    load = expert_load(moe, ids)
    assert load.shape == (2, 4) and torch.allclose(load.sum(1), torch.ones(2))


def test_training_moves_experts_apart_and_the_balance_loss_is_in_the_loss():
    moe = upcycle(tiny_llama(3), UpcycleConfig(experts=4, top_k=2, aux_loss_coef=0.5)).train()
    assert moe.config.output_router_logits is False  # saved for inference; training switches it on
    moe.config.output_router_logits = True
    ids = torch.randint(3, len(tiny_tokenizer()), (4, 16))
    out = moe(input_ids=ids, labels=ids)
    assert out.aux_loss is not None and out.aux_loss.item() > 0
    before = moe.model.layers[0].mlp.experts.gate_up_proj.detach().clone()
    opt = torch.optim.AdamW(moe.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        out = moe(input_ids=ids, labels=ids)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    after = moe.model.layers[0].mlp.experts.gate_up_proj.detach()
    assert losses[-1] < losses[0]
    assert not torch.equal(after[0], after[1])  # the copies diverge once routed differently
    assert not torch.equal(before, after)


def test_bad_configs_and_students_are_named():
    with pytest.raises(ConfigError, match="1 <= top_k <= experts"):
        UpcycleConfig(experts=4, top_k=5)
    with pytest.raises(ConfigError, match="reads a Llama-architecture student"):
        upcycle(tiny_moe(0))


def test_an_upcycled_student_runs_through_the_serving_decoder(tmp_path):
    from livemind.serve.host.decoder import BatchDecoder
    from livemind.think.backends import load_causal_lm

    upcycle(tiny_llama(3)).save_pretrained(tmp_path / "moe")
    tiny_tokenizer().save_pretrained(tmp_path / "moe")
    tok, moe = load_causal_lm(str(tmp_path / "moe"))
    chat = [{"role": "user", "content": "how much is the mug?"}]
    d, ref = BatchDecoder(tok, moe), BatchDecoder(tiny_tokenizer(), tiny_llama(3))
    try:
        assert "".join(d.stream(chat, 12)) == "".join(ref.stream(chat, 12))  # upcycled = dense at first
    finally:
        d.close()
        ref.close()


def test_think_upcycle_cli(tmp_path):
    from typer.testing import CliRunner

    from livemind.cli import app
    from livemind.think.backends import load_causal_lm

    tiny_llama(3).save_pretrained(tmp_path / "dense")
    tiny_tokenizer().save_pretrained(tmp_path / "dense")
    res = CliRunner().invoke(app, ["think", "upcycle", str(tmp_path / "dense"), "--out", str(tmp_path / "moe"),
                                   "--experts", "4", "--top-k", "2"])
    assert res.exit_code == 0, res.output
    _, moe = load_causal_lm(str(tmp_path / "moe"))
    assert type(moe).__name__ == "MixtralForCausalLM" and moe.config.num_local_experts == 4
    res = CliRunner().invoke(app, ["think", "upcycle", str(tmp_path / "dense"), "--out", str(tmp_path / "x"),
                                   "--top-k", "9"])
    assert res.exit_code == 2 and "1 <= top_k <= experts" in res.output
