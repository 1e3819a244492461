"""Continuous batching (`BatchDecoder`) against its reference twin, transformers' own greedy
`generate`: the same tokens alone, in a batch, and when requests join and leave mid-decode."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from livemind.errors import ConfigError
from livemind.serve.host.decoder import BatchDecoder, Generation
from tests.think.tiny_lm import tiny_llama, tiny_moe, tiny_tokenizer

QUESTIONS = ["how much is the mug?", "does it ship today?", "which is cheaper, the lamp or the mug?",
             "is it in stock?", "what is the discount?"]


def chat(q: str, system: str = "You are a live host. The mug is 90.00 today.") -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": q}]


def reference(lm, q: str, n: int) -> str:
    """transformers' greedy generate, batch 1, up to the end-of-turn token."""
    tok = tiny_tokenizer()
    text = tok.apply_chat_template(chat(q), tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.fixture(params=["llama", "moe"])
def lm(request):
    return tiny_llama(3) if request.param == "llama" else tiny_moe(3)


def test_alone_and_batched_the_tokens_are_transformers_greedy_ones(lm):
    want = [reference(lm, q, 16) for q in QUESTIONS]
    d = BatchDecoder(tiny_tokenizer(), lm, max_batch=8)
    try:
        assert ["".join(d.stream(chat(q), 16)) for q in QUESTIONS] == want  # one at a time
        gens = [Generation() for _ in QUESTIONS]
        reqs = [d.submit(chat(q), 16, gen=g) for q, g in zip(QUESTIONS, gens)]  # all at once: one batch
        assert ["".join(d.pieces(r)) for r in reqs] == want
        assert max(g.batch for g in gens) == len(QUESTIONS)
        assert all(g.text == w and g.finish_reason in ("stop", "length") for g, w in zip(gens, want))
    finally:
        d.close()


def test_requests_that_join_and_leave_mid_decode_keep_their_tokens():
    lm = tiny_llama(3)
    lengths = [3, 20, 7, 20, 1]  # short ones leave while long ones run; later ones join a running batch
    want = [reference(lm, q, n) for q, n in zip(QUESTIONS, lengths)]
    d = BatchDecoder(tiny_tokenizer(), lm, max_batch=3)  # fewer rows than requests: some wait for a row
    try:
        out: dict[int, str] = {}

        def ask(i: int) -> None:
            time.sleep(0.02 * i)
            out[i] = "".join(d.stream(chat(QUESTIONS[i]), lengths[i]))

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(QUESTIONS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [out[i] for i in range(len(QUESTIONS))] == want
        deadline = time.time() + 5  # the last row leaves at the end of the step that finished it
        while d.running and time.time() < deadline:
            time.sleep(0.01)
        assert d.running == 0 and d.waiting == 0
    finally:
        d.close()


def test_seeded_sampling_does_not_depend_on_the_batch():
    d = BatchDecoder(tiny_tokenizer(), tiny_llama(3))
    try:
        alone = "".join(d.stream(chat(QUESTIONS[0]), 12, temperature=1.0, top_p=0.9, seed=7))
        reqs = [d.submit(chat(q), 12, temperature=1.0, top_p=0.9, seed=7) for q in QUESTIONS[:1] + QUESTIONS[1:3]]
        assert "".join(d.pieces(reqs[0])) == alone
        for r in reqs[1:]:
            "".join(d.pieces(r))
    finally:
        d.close()


def test_a_consumer_that_goes_away_frees_its_row():
    d = BatchDecoder(tiny_tokenizer(), tiny_llama(3))
    d.stop_ids = set()  # never ends by itself
    try:
        it = d.stream(chat(QUESTIONS[0]), 500)
        next(it)
        assert d.running == 1
        it.close()  # the client disconnected
        deadline = time.time() + 10
        while d.running and time.time() < deadline:
            time.sleep(0.01)
        assert d.running == 0
    finally:
        d.close()


def test_bad_settings_are_named():
    d = BatchDecoder(tiny_tokenizer(), tiny_llama(3))
    try:
        with pytest.raises(ConfigError, match="max_tokens must be >= 1, got 0"):
            d.submit(chat("hi"), 0)
        with pytest.raises(ConfigError, match="got -1, 1.0"):
            d.submit(chat("hi"), 4, temperature=-1)
    finally:
        d.close()
    with pytest.raises(ConfigError, match="max_batch >= 1"):
        BatchDecoder(tiny_tokenizer(), tiny_llama(3), max_batch=0)


def test_stop_strings_cut_the_offline_and_the_served_answers_alike():
    """`Sampling.stop`: transformers generates whole and cuts after (its cache keeps the whole text),
    the served decoder stops there; both give the same text."""
    from livemind.serve.host.backend import DecoderBackend
    from livemind.think.backends import HFBackend, Sampling

    lm, tok = tiny_llama(3), tiny_tokenizer()
    whole = reference(lm, QUESTIONS[1], 20)
    cut = whole[len(whole) // 2:len(whole) // 2 + 3]
    assert cut.strip()
    sampling = Sampling(temperature=0.0, max_tokens=20, stop=(cut,))
    offline = HFBackend("tiny", tokenizer=tok, module=lm).generate([chat(QUESTIONS[1])], sampling)[0][0]
    served_backend = DecoderBackend("tiny", tok, lm, 0)
    try:
        served = served_backend.generate([chat(QUESTIONS[1])], sampling)[0][0]
    finally:
        served_backend.close()
    assert offline.text == served.text == whole[:whole.find(cut)]
    assert not offline.cut_off(20) and offline.tokens < 20


def test_think_eval_scores_the_served_decoder_like_transformers(tmp_path):
    from livemind.serve.host.backend import engine_backends
    from livemind.think.backends import Sampling
    from livemind.think.report import ModelSpec, evaluate_models
    from livemind.think.tasks import make_tasks
    from tests.think.test_tasks import P, Q

    folder = tmp_path / "student"
    tiny_llama(3).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    tasks = make_tasks([P, Q], 6, 0, "test")
    specs = [ModelSpec.parse(f"{name}={folder}{suffix}") for name, suffix in
             (("hf", ""), ("served", "@served"), ("int8", "@served-int8"))]
    hf, served, int8 = evaluate_models(specs, tasks, [], Sampling(temperature=0.0, max_tokens=12),
                                       Sampling(temperature=0.0, max_tokens=12), lambda m: None, batch_size=4,
                                       float_cache=None, engines=engine_backends(float_cache=None))
    assert [s.completion.text for s in served.scored] == [s.completion.text for s in hf.scored]
    # (token counts may differ by one here: transformers does not count a generated <pad>, which a random model makes)
    assert served.summary["correct"] == hf.summary["correct"] and served.params == hf.params == int8.params
    assert len(int8.scored) == len(tasks) and all(s.completion.text is not None for s in int8.scored)
    with pytest.raises(ConfigError, match="engine 'vllm' is not available here"):
        evaluate_models([ModelSpec.parse(f"x={folder}@vllm")], tasks, [], Sampling(), Sampling(), engines={})


@pytest.mark.parametrize("make", [tiny_llama, tiny_moe])
def test_think_export_writes_a_checked_folder_that_serve_reads(tmp_path, make):
    import json

    from typer.testing import CliRunner

    from livemind.cli import app
    from livemind.errors import DataError
    from livemind.serve.host.export import SERVING_FILE, served_weights
    from livemind.think.backends import load_causal_lm

    src = tmp_path / "student"
    make(3).save_pretrained(src)
    tiny_tokenizer().save_pretrained(src)
    out = tmp_path / "served"
    res = CliRunner().invoke(app, ["think", "export", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    info = json.loads((out / SERVING_FILE).read_text())
    assert info["weights"] == "int8" and info["source"] == str(src) and served_weights(str(out)) == "int8"
    assert (info["experts"], info["experts_per_token"]) == ((4, 2) if make is tiny_moe else (None, None))
    assert info["active_params"] < info["params"] if make is tiny_moe else info["active_params"] == info["params"]
    tok, lm = load_causal_lm(str(out))
    d, ref = BatchDecoder(tok, lm), BatchDecoder(tiny_tokenizer(), make(3))
    try:
        assert "".join(d.stream(chat(QUESTIONS[2]), 16)) == "".join(ref.stream(chat(QUESTIONS[2]), 16))
    finally:
        d.close()
        ref.close()
    assert served_weights(str(src)) is None  # not an export: serve's own default
    (out / SERVING_FILE).write_text('{"weights": "int4"}')
    with pytest.raises(DataError, match="weights 'int4'; expected fp32 or int8"):
        served_weights(str(out))
    res = CliRunner().invoke(app, ["think", "export", str(src), "--out", str(out), "--weights", "fp16"])
    assert res.exit_code == 2 and "--weights must be fp32 or int8, got 'fp16'" in res.output


def test_penalties_and_logprobs_of_a_pick_by_hand():
    import math

    from livemind.serve.host.decoder import DecodeRequest, Generation, Penalties

    gen = Generation()
    req = DecodeRequest(None, [], 4, 0.0, 1.0, None, (), gen, Penalties(presence=0.3, frequency=0.2), top_logprobs=2)
    req.counts = {0: 2}  # token 0 made twice: its logit 1.0 - 0.3 - 2 x 0.2 = 0.3, under token 1's 0.5
    assert req.pick(torch.tensor([1.0, 0.5, 0.0])) == 1 and not req.plain
    z = math.log(math.exp(0.3) + math.exp(0.5) + math.exp(0.0))
    lp, alts = req._scored
    assert lp == pytest.approx(0.5 - z, abs=1e-6)
    assert [a for a, _ in alts] == [1, 0] and alts[1][1] == pytest.approx(0.3 - z, abs=1e-6)
    with pytest.raises(Exception, match="presence penalty must be a number in"):
        Penalties(presence=float("nan"))
    assert DecodeRequest(None, [], 4, 0.0, 1.0, None, (), Generation()).plain  # greedy alone: drafts may be checked


def test_the_host_s_decoder_stops_at_a_sentence_said_again_as_the_offline_cut_does():
    """`repeats=True` (the host's rule): the decoder stops where the completion first says a sentence
    again, streaming exactly the text the offline evaluation keeps of the whole completion (at_stop),
    in fewer tokens. Random tiny models loop often enough to find some that repeat."""
    from livemind.think.backends import Completion, at_stop
    from livemind.think.prompts import repeat_cut

    looped = 0
    for seed in (1, 2):
        d = BatchDecoder(tiny_tokenizer(), tiny_llama(seed), max_batch=2)
        try:
            for q in ("does it ship today?", "hello", "how much is the mug?"):
                whole, cut = Generation(), Generation()
                full = "".join(d.stream(chat(q), 200, gen=whole))
                short = "".join(d.stream(chat(q), 200, gen=cut, repeats=True))
                assert short == cut.text == at_stop(Completion(full), (), None, True).text
                if repeat_cut(full) is not None:
                    looped += 1
                    assert cut.finish_reason == "stop" and cut.completion_tokens < whole.completion_tokens
                    assert repeat_cut(short) is None
        finally:
            d.close()
    assert looped >= 1
