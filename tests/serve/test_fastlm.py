"""The host decoder's own Llama forward (`FastLlama`) against transformers' forward, its int8
paths, the decoder's key/value buffers when they must shift or grow, and per-thread CPU threads."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from livemind.errors import ConfigError
from livemind.serve.host import decoder as decoder_module
from livemind.serve.host import threads as threads_module
from livemind.serve.host.decoder import SHARED_MIN, BatchDecoder, Generation
from livemind.serve.host.forward import ATTN_CHUNK, GEMM_ROWS, FastLlama, HFRunner, _attend, runner_for
from livemind.serve.host.int8 import quantize_int8
from livemind.serve.host.threads import own_threads
from tests.serve.test_decoder import chat, reference
from tests.think.tiny_lm import tiny_moe, tiny_tokenizer


def gqa_llama(seed: int = 0):
    """A tiny Llama shaped like SmolLM2: grouped-query attention (4 heads, 2 kv heads), tied embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    t = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(t), hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True, rope_theta=100000.0,
                      eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id)
    return LlamaForCausalLM(cfg).eval()


def run(runner, ids: torch.Tensor, pad: int = 0, steps: int = 3) -> list[torch.Tensor]:
    """The runner's logits: a prefill of `ids` (1, L) behind `pad` masked columns, then `steps` greedy
    tokens one at a time; [(1, V)] per position run."""
    shape, L = runner.kv, ids.shape[1]
    cols = pad + L + steps
    keys = torch.randn(shape.layers, 1, shape.heads, cols, shape.dim)  # masked columns hold junk, not NaN
    values = torch.randn_like(keys)
    mask = torch.zeros(1, cols, dtype=torch.bool)
    mask[0, pad:pad + L] = True
    out = [runner.forward(ids, torch.arange(L)[None], keys, values, pad, mask[:, :pad + L])]
    for s in range(steps):
        token = out[-1].argmax(-1, keepdim=True)
        mask[0, pad + L + s] = True
        out.append(runner.forward(token, torch.tensor([[L + s]]), keys, values, pad + L + s, mask[:, :pad + L + s + 1]))
    return out


def hf_logits(lm, ids: torch.Tensor, steps: int = 3) -> list[torch.Tensor]:
    """transformers' own forward on the whole sequence so far, for the same greedy tokens."""
    out, seq = [], ids
    with torch.inference_mode():
        for _ in range(steps + 1):
            logits = lm(input_ids=seq).logits[:, -1].float()
            out.append(logits)
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1)
    return out


def test_fast_llama_gives_transformers_logits_in_float():
    lm = gqa_llama()
    ids = torch.randint(3, len(tiny_tokenizer()), (1, 40))
    want = hf_logits(lm, ids)
    fast = FastLlama(lm)
    with torch.inference_mode():
        got = run(fast, ids)
        padded = run(fast, ids, pad=5)
    for g, p, w in zip(got, padded, want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(p, w, atol=1e-4, rtol=1e-4)
    assert len(got) == 4


def test_fast_llama_int8_paths_follow_the_int8_model():
    """A prefill of >= GEMM_ROWS tokens multiplies the int8 values as bfloat16 on the GEMM; a decoding
    step uses torch's int8 weight-only kernel; both stay within 5% of the int8 model's logits and
    pick its tokens."""
    lm = quantize_int8(gqa_llama())
    ids = torch.randint(3, len(tiny_tokenizer()), (1, GEMM_ROWS + 24))
    want = hf_logits(lm, ids)
    with torch.inference_mode():
        got = run(FastLlama(lm), ids)
    for g, w in zip(got, want):
        assert (g - w).abs().max() < 0.05 * w.abs().max()
        assert int(g.argmax()) == int(w.argmax())


def test_the_runner_is_fast_for_llama_and_transformers_for_the_rest():
    assert isinstance(runner_for(gqa_llama()), FastLlama)
    moe = tiny_moe(1)
    assert isinstance(runner_for(moe), HFRunner)
    ids = torch.randint(3, len(tiny_tokenizer()), (1, 12))
    with torch.inference_mode():
        for g, w in zip(run(HFRunner(moe), ids), hf_logits(moe, ids)):
            torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    with pytest.raises(TypeError, match="FastLlama runs Llama models"):
        FastLlama(moe)
    runner, shape = HFRunner(moe), HFRunner(moe).kv
    keys = torch.zeros(shape.layers, 1, shape.heads, 12, shape.dim)
    with torch.inference_mode():
        every = runner.forward(ids, torch.arange(12)[None], keys, torch.zeros_like(keys), 0,
                               torch.ones(1, 12, dtype=torch.bool), every=True)
        torch.testing.assert_close(every, moe(input_ids=ids).logits.float(), atol=1e-4, rtol=1e-4)  # (1, S, V)
    assert BatchDecoder(tiny_tokenizer(), moe).speculate == 0  # drafts only over livemind's own forward
    from torch.ao.quantization import quantize_dynamic

    dynamic = quantize_dynamic(gqa_llama(), {torch.nn.Linear}, dtype=torch.qint8)  # its own int8 Linear: not fused
    assert isinstance(runner_for(dynamic), HFRunner)


def test_buffers_shift_for_a_longer_prompt_and_grow_past_their_headroom(monkeypatch):
    """A long prompt joins a batch whose window is shorter (the buffers shift right), and rows decode
    past the free columns (the buffers grow and move left): every row keeps transformers' tokens."""
    monkeypatch.setattr(decoder_module, "KV_HEADROOM", 8)
    lm = gqa_llama(1)
    short, long_system = "hi", "You are a live host. " + "The mug is 90.00 today and ships in 1 day. " * 6
    want_short = reference(lm, short, 40)
    tok = tiny_tokenizer()
    text = tok.apply_chat_template(chat("how much?", long_system), tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=30, do_sample=False,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    want_long = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    d = BatchDecoder(tok, lm, max_batch=2, prefix_cache=0)
    try:
        first = d.submit(chat(short), 40)
        pieces = d.pieces(first)
        head = next(pieces)  # the short prompt is decoding
        second = d.submit(chat("how much?", long_system), 30)
        assert head + "".join(pieces) == want_short
        assert "".join(d.pieces(second)) == want_long
        assert d.reallocations == 3  # grown half as big again each time, not headroom by headroom
        assert ids.shape[1] + 30 <= d._K.shape[3] <= 3 * (ids.shape[1] + 40) // 2 + 8
    finally:
        d.close()


@pytest.mark.skipif(threads_module._libgomp() is None, reason="per-thread OpenMP threads need libgomp")
def test_own_threads_changes_the_calling_thread_only():
    before = torch.get_num_threads()
    seen: dict[str, int] = {}

    def decoder_thread() -> None:
        own_threads(before + 1)
        seen["own"] = torch.get_num_threads()

    t = threading.Thread(target=decoder_thread)
    t.start()
    t.join()
    later = threading.Thread(target=lambda: seen.__setitem__("later", torch.get_num_threads()))
    later.start()
    later.join()
    assert seen == {"own": before + 1, "later": before}
    assert torch.get_num_threads() == before


def test_a_prefix_from_the_cache_is_never_written():
    lm = gqa_llama(2)
    d = BatchDecoder(tiny_tokenizer(), lm, max_batch=2)
    try:
        "".join(d.stream(chat("how much?"), 6))
        (entry,) = d._prefixes.values()
        kept = copy.deepcopy(entry)
        "".join(d.stream(chat("does it ship today?"), 6))
        assert all(torch.equal(a, b) for a, b in zip(entry, kept))
    finally:
        d.close()


def test_a_long_prefill_attends_in_blocks_with_the_same_result():
    """`_attend` splits a prefill of more than `ATTN_CHUNK` queries into blocks over the keys each may
    see: equal to one attention over the whole mask, with cached columns before and padding."""
    torch.manual_seed(0)
    B, H, Hkv, D, start, S = 2, 4, 2, 16, 20, 2 * ATTN_CHUNK + 9
    T = start + S
    q, k, v = torch.randn(B, H, S, D), torch.randn(B, Hkv, T, D), torch.randn(B, Hkv, T, D)
    rows = torch.ones(B, T, dtype=torch.bool)
    rows[1, :7] = False  # the second row's first columns are left padding
    allowed = rows[:, None, None, :] & (torch.arange(T) <= start + torch.arange(S)[:, None])
    whole = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=0.25, enable_gqa=True)
    blocked = _attend(q, k, v, allowed, start, 0.25)
    assert blocked.shape == (B, H, S, D)
    torch.testing.assert_close(blocked, whole, rtol=1e-5, atol=1e-5)


def test_a_new_card_starts_after_the_rules_every_card_shares():
    """Two cards cached: the head their system messages share (the host's rules) is cached on its own,
    a third card's first question starts after it, and its answer is the one without any cache."""
    lm = gqa_llama(3)
    rules = "You are the host of a live stream. Answer from the card only; never invent a discount. Card: "
    cards = [rules + text for text in ("a blue mug, 9.00, ships today.", "green tea, 4.50, in stock.",
                                       "a red scarf, 19.00, ships in 3 days.")]
    plain = BatchDecoder(tiny_tokenizer(), lm, prefix_cache=0)
    cached = BatchDecoder(tiny_tokenizer(), lm, prefix_cache=8)
    try:
        for card in cards:
            a, b = Generation(), Generation()
            assert "".join(plain.stream(chat("how much?", card), 10, gen=a)) == \
                "".join(cached.stream(chat("how much?", card), 10, gen=b))
        head = min(cached._prefixes, key=len)
        assert len(cached._prefixes) == 4 and len(head) >= SHARED_MIN  # three cards and their shared head
        assert all(key[:len(head)] == head for key in cached._prefixes)
        assert b.cached_tokens == len(head) and a.cached_tokens == 0  # the third card's first question
        again = Generation()
        "".join(cached.stream(chat("does it ship today?", cards[2]), 4, gen=again))
        assert again.cached_tokens == len(max(cached._prefixes, key=len)) > len(head)  # now the card itself
    finally:
        plain.close()
        cached.close()


def test_a_prefill_product_keeps_activations_in_bfloat16_whatever_a_channel_s_size():
    """A prefill's rows multiply the int8 weights at bfloat16 precision, a row with one channel a
    thousand times larger than the rest included: the ordinary channels' product survives (int8
    activations with one scale for the row step by 1000 / 127 and round them all to 0)."""
    from livemind.serve.host.forward import _Fused

    torch.manual_seed(1)
    linear = torch.nn.Linear(64, 48, bias=False)
    with torch.no_grad():
        linear.weight[:, 0] = 0.0  # the outlier channel adds nothing: the product is the other 63's
    layer = quantize_int8(torch.nn.Sequential(linear))[0]
    x = torch.randn(GEMM_ROWS + 4, 64)
    x[3, 0] = 1000.0
    want = x @ layer.dequantized().t()
    got = _Fused([layer])(x)
    assert got.dtype == torch.float32 and got.shape == (GEMM_ROWS + 4, 48)
    assert ((got - want).abs() <= 0.02 * want.abs().amax(1, keepdim=True)).all()
    rows = x.abs().amax(1, keepdim=True) / 127  # what per-token int8 activations would have multiplied
    assert (torch.round(x[3] / rows[3])[1:] == 0).all() and want[3].abs().max() > 0.5
    few = _Fused([layer])(x[:2])  # a decoding step: the weight-only kernel, activations in bfloat16
    assert (few - want[:2]).abs().max() < 0.01 * want[:2].abs().max()


def test_prompt_lookup_drafts_keep_the_greedy_tokens_in_fewer_steps():
    """A row decoding alone checks prompt-lookup drafts: the same greedy text, token count and finish
    reason as without them, in fewer forward steps; a draft token that ends the request (its budget,
    a stop string) ends it there."""
    lm = gqa_llama(4)
    system = "You are a live host. " + "The blue mug is 9.00 and ships today. " * 4
    plain = BatchDecoder(tiny_tokenizer(), lm, speculate=0)
    spec = BatchDecoder(tiny_tokenizer(), lm, speculate=4)
    try:
        want = "".join(plain.stream(chat("how much is the blue mug?", system), 60))
        stop = want[len(want) // 2:len(want) // 2 + 3]  # a stop string that cuts the answer halfway
        for question, budget, stops in (("how much is the blue mug?", 60, ()), ("how much is the blue mug?", 17, ()),
                                         ("how much is the blue mug?", 60, (stop,)), ("ships today?", 40, ())):
            a, b = Generation(), Generation()
            before = plain.steps, spec.steps
            assert "".join(plain.stream(chat(question, system), budget, stop=stops, gen=a)) == \
                "".join(spec.stream(chat(question, system), budget, stop=stops, gen=b))
            assert (a.text, a.completion_tokens, a.finish_reason) == (b.text, b.completion_tokens, b.finish_reason)
            assert spec.steps - before[1] <= plain.steps - before[0]
        assert spec.accepted > 10 and spec.steps < plain.steps and spec.drafted >= spec.accepted
    finally:
        plain.close()
        spec.close()
    with pytest.raises(ConfigError, match="speculate"):
        BatchDecoder(tiny_tokenizer(), lm, speculate=-1)


def test_the_window_moves_in_place_when_the_buffers_are_big_enough():
    d = BatchDecoder(tiny_tokenizer(), gqa_llama(1), max_batch=2, prefix_cache=0)
    shape, room = d.runner.kv, decoder_module.KV_HEADROOM
    d._K = torch.randn(shape.layers, 2, shape.heads, 2 * room, shape.dim)
    d._V = torch.randn_like(d._K)
    d._mask = torch.zeros(2, 2 * room, dtype=torch.bool)
    d._lo, d._hi = room + 10, room + 20
    d._mask[:, d._lo:d._hi] = True
    window, K = d._K[:, :, :, d._lo:d._hi].clone(), d._K
    d._reserve(-d._lo)  # to the buffers' start: they are big enough
    assert d._K is K and d.reallocations == 0 and (d._lo, d._hi) == (0, 10)
    assert torch.equal(d._K[:, :, :, :10], window) and d._mask[:, :10].all() and not d._mask[:, 10:].any()
    d._reserve(room + 60)  # past their end: new buffers, half as big again at least
    assert d.reallocations == 1 and d._K.shape[3] == 3 * room and (d._lo, d._hi) == (room + 60, room + 70)
    assert torch.equal(d._K[:, :, :, d._lo:d._hi], window) and d._mask[:, d._lo:d._hi].all()
    assert int(d._mask.sum()) == 2 * 10
    d.close()
