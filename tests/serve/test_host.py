"""The live host over real HTTP: /v1/host/ask (JSON and SSE) and the OpenAI-compatible API driven
by the official `openai` client; a tiny random model keeps it fast."""

from __future__ import annotations

import dataclasses
import json
import time

import httpx
import openai
import pytest
import torch

from livemind.serve.host.decoder import BatchDecoder
from livemind.serve.host.serving import Generation, Host, HostConfig
from livemind.think.tasks import card, products_of
from tests.serve.conftest import Server
from tests.serve.test_rec_service import ROOM, SEG
from tests.think.tiny_lm import tiny_llama, tiny_tokenizer

MODEL = "livemind-host"


@pytest.fixture(scope="module")
def catalog(tiny_world):
    _, world = tiny_world
    return {p.id: p for p in products_of(world)}


@pytest.fixture
def host(catalog):
    h = Host(HostConfig("tiny", max_tokens=24, max_wait_s=2.0), BatchDecoder(tiny_tokenizer(), tiny_llama()), catalog)
    yield h
    h.decoder.close()


@pytest.fixture
def served(serve_config, host):
    cfg = dataclasses.replace(serve_config, host=host.cfg)
    with Server(cfg, host=host) as srv:
        srv.wait_ready()
        seg = {**SEG, "product": 7}
        assert httpx.post(srv.url + "/v1/events", json={"events": [ROOM, seg]}).status_code == 200
        yield srv


def client(srv) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)


CHAT = [{"role": "system", "content": "You are a live host."}, {"role": "user", "content": "how much is the mug?"}]


def test_chat_completions_with_the_official_client_streaming_and_not(served, host):
    c = client(served)
    assert [m.id for m in c.models.list().data] == [MODEL]
    full = c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=12, temperature=0)
    gen = Generation()
    direct = "".join(host.decoder.stream(CHAT, 12, gen=gen))  # the same decoding, without HTTP
    assert full.choices[0].message.content == direct and full.choices[0].message.role == "assistant"
    assert full.choices[0].finish_reason == gen.finish_reason
    assert full.usage.prompt_tokens == gen.prompt_tokens and full.usage.completion_tokens == gen.completion_tokens
    assert full.usage.total_tokens == gen.prompt_tokens + gen.completion_tokens
    chunks = list(c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == direct
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == gen.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == gen.completion_tokens
    assert len(chunks) >= 3  # token by token, not one block


def test_max_tokens_stop_seed_and_n(served, host):
    c = client(served)
    five = c.chat.completions.create(model=MODEL, messages=CHAT, max_completion_tokens=5, temperature=0)
    assert five.usage.completion_tokens <= 5
    if five.usage.completion_tokens == 5:
        assert five.choices[0].finish_reason == "length"
    text = c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=20, temperature=0).choices[0].message.content
    cut = text[len(text) // 2:len(text) // 2 + 3]
    if cut.strip():
        stopped = c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=20, temperature=0, stop=[cut])
        assert stopped.choices[0].message.content == text[:text.find(cut)]
        assert stopped.choices[0].finish_reason == "stop"
        streamed = c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=20, temperature=0, stop=cut, stream=True)
        assert "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices) == text[:text.find(cut)]
    a = c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=10, temperature=1.0, seed=3, n=2)
    b = c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=10, temperature=1.0, seed=3, n=2)
    assert [x.message.content for x in a.choices] == [x.message.content for x in b.choices]  # seeded
    assert [x.index for x in a.choices] == [0, 1]
    assert 2 <= a.usage.completion_tokens <= 20  # both choices' tokens
    c_ = c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=10, temperature=1.0, seed=4, n=2)
    assert [x.message.content for x in c_.choices] != [x.message.content for x in a.choices]  # another seed


@pytest.mark.parametrize("kwargs, status, param, code", [
    ({"model": "gpt-4o"}, 404, "model", "model_not_found"),
    ({"max_tokens": 0}, 400, "max_tokens", None),
    ({"temperature": -1}, 400, "temperature", None),
    ({"messages": []}, 400, "messages", None),
    ({"messages": [{"role": "user", "content": "how much is the mug? " * 400}]}, 400, "messages",
     "context_length_exceeded"),  # past the tiny model's 1,024 positions
    # bounded: a 200 kB stop string once held every other answer for 30 s (matched on every token)
    ({"stop": "x" * 200_000}, 400, "stop", None),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", None),
    ({"messages": [{"role": "user", "content": "y" * 20_000}]}, 400, "messages.0.content", None),
    ({"messages": [{"role": "user", "content": "y" * 15_000}] * 3}, 400, "messages", None),  # 45k characters in all
    ({"messages": [{"role": "user", "content": "hi"}] * 65}, 400, "messages", None),
    ({"seed": -1}, 400, "seed", None),
    ({"n": 9}, 400, "n", None),
    # what this server does not implement is refused by name, not silently dropped
    ({"top_logprobs": 2}, 400, "top_logprobs", None),  # without logprobs: true
    ({"top_logprobs": 21, "logprobs": True}, 400, "top_logprobs", None),
    ({"presence_penalty": 2.5}, 400, "presence_penalty", None),
    ({"response_format": {"type": "json_object"}}, 400, "response_format", "unsupported_parameter"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, 400, "tools",
     "unsupported_parameter"),
    ({"logit_bias": {"42": 5}}, 400, "logit_bias", "unsupported_parameter"),
    ({"extra_body": {"best_of": 3}}, 400, "best_of", None),  # an unknown parameter
])
def test_bad_requests_get_openai_errors(served, kwargs, status, param, code):
    args = {"model": MODEL, "messages": CHAT, **kwargs}
    assert len(str(args)) < 300_000
    with pytest.raises(openai.APIStatusError) as err:
        client(served).chat.completions.create(**args)
    assert err.value.status_code == status
    body = err.value.response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["param"] == param and body["message"]
    assert body["code"] == code


def test_host_ask_answers_from_the_card_now_and_remembers_the_viewer(served, host, catalog):
    url = served.url + "/v1/host/ask"
    r = httpx.post(url, json={"room": 900, "viewer": 5, "question": "how much is it?"}, timeout=60).json()
    assert r["product"] == 7 and r["room"] == 900 and isinstance(r["answer"], str)
    assert r["usage"]["completion_tokens"] >= 1 and r["timings"]["total_ms"] > 0
    assert r["finish_reason"] in ("stop", "length")
    # the card changes: the next question is answered about the new product, with the first turn as history
    nxt = {**SEG, "index": 1, "start_time": SEG["start_time"] + 30, "product": 8}
    assert httpx.post(served.url + "/v1/events", json={"events": [nxt]}).status_code == 200
    chat = host.prompt(8, 900, 5, "and this one?")
    assert card(catalog[8]) in chat[0]["content"] and card(catalog[7]) not in chat[0]["content"]
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    assert chat[1]["content"] == "how much is it?" and chat[2]["content"] == r["answer"]  # as the tasks keep turns
    again = httpx.post(url, json={"room": 900, "viewer": 5, "question": "and this one?"}, timeout=60).json()
    assert again["product"] == 8
    other = host.prompt(8, 900, 6, "hi")  # another viewer has no turns
    assert [m["role"] for m in other] == ["system", "user"]


def test_host_ask_stops_where_the_host_would_write_the_viewer_s_turn(served, host, monkeypatch):
    """/v1/host/ask ends an answer at the host's stop strings (prompts.STOP: "Viewer:"), as think eval
    does offline. The tiny model never writes "Viewer:", so a piece of its own answer stands in."""
    from livemind.serve.api import host_serving

    url = served.url + "/v1/host/ask"
    full = httpx.post(url, json={"room": 900, "viewer": 21, "question": "is it in stock?", "max_tokens": 24},
                      timeout=60).json()["answer"]
    cut = full[len(full) // 2:len(full) // 2 + 3]
    assert len(full) > 6 and cut.strip()
    monkeypatch.setattr(host_serving, "STOP", (cut,))
    r = httpx.post(url, json={"room": 900, "viewer": 22, "question": "is it in stock?", "max_tokens": 24},
                   timeout=60).json()  # another viewer: the same prompt, no turns yet
    assert r["answer"] == full[:full.find(cut)].strip() and r["finish_reason"] == "stop"


def test_host_ask_streams_server_sent_events(served):
    with httpx.stream("POST", served.url + "/v1/host/ask", json={"room": 900, "viewer": 1, "question": "ships when?",
                                                                 "stream": True}, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    deltas, done = events[:-1], events[-1]
    assert len(deltas) >= 2 and all(set(e) == {"delta"} for e in deltas)
    text = "".join(e["delta"] for e in deltas)
    assert done["done"] is True and done["usage"]["completion_tokens"] >= len(deltas)
    assert done["answer"] in text and done["product"] == 7


def test_logprobs_with_the_likeliest_alternatives_streamed_and_not(served, host):
    c = client(served)
    r = c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=6, logprobs=True, top_logprobs=3,
                                  temperature=0)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens and "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3 and bytes(t.bytes).decode() == t.token
        alts = [a.logprob for a in t.top_logprobs]
        assert alts == sorted(alts, reverse=True) and t.top_logprobs[0].token == t.token  # greedy: the likeliest
        assert t.logprob == pytest.approx(alts[0])
    # the decoder's own greedy answer, without logprobs (and so with its prompt-lookup drafts)
    gen = Generation()
    text = "".join(host.decoder.stream(CHAT, 6, gen=gen))
    assert text == r.choices[0].message.content
    chunks = list(c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=6, logprobs=True, top_logprobs=1,
                                            stream=True, temperature=0))
    streamed = [t for ch in chunks for choice in ch.choices if choice.logprobs for t in choice.logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in content]
    assert [t.logprob for t in streamed] == pytest.approx([t.logprob for t in content], abs=1e-5)
    assert c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=4).choices[0].logprobs is None


def test_penalties_lower_the_logits_of_tokens_already_made(served):
    c = client(served)
    plain = c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=24, logprobs=True, top_logprobs=0,
                                      temperature=0)
    tokens = [t.token for t in plain.choices[0].logprobs.content]
    assert len(set(tokens)) < len(tokens)  # the tiny model repeats itself greedily ...
    penalised = c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=24, frequency_penalty=2.0,
                                          presence_penalty=2.0, logprobs=True, top_logprobs=0, temperature=0)
    again = [t.token for t in penalised.choices[0].logprobs.content]
    repeats = lambda ts: len(ts) - len(set(ts))  # noqa: E731
    assert repeats(again) < repeats(tokens)  # ... and less with the penalties


def test_defaults_of_unimplemented_parameters_and_bookkeeping_fields_are_accepted(served):
    r = client(served).chat.completions.create(model=MODEL, messages=CHAT, max_tokens=4, logprobs=False,
                                                presence_penalty=0, frequency_penalty=0.0, tools=[], user="u-1",
                                                response_format={"type": "text"}, metadata={"k": "v"})
    assert r.choices[0].message.content is not None


@pytest.mark.parametrize("body, status, field", [
    ({"room": 12345, "viewer": 1, "question": "hi?"}, 404, "room"),
    ({"room": 900, "viewer": 1, "question": "   "}, 422, "question"),
    ({"room": 900, "viewer": 1, "question": "x" * 100_000}, 422, "question"),
    ({"room": 900, "viewer": -1, "question": "hi?"}, 422, "viewer"),
    ({"room": 2**70, "viewer": 1, "question": "hi?"}, 422, "room"),
    ({"room": 900, "viewer": 1}, 422, "question"),
    ({"room": 900, "viewer": 1, "question": "hi?", "max_tokens": 1000}, 422, "max_tokens"),  # past the 1,024-token context
])
def test_host_ask_bad_input(served, body, status, field):
    r = httpx.post(served.url + "/v1/host/ask", json=body)
    assert r.status_code == status and r.json()["field"] == field and r.json()["error"]


def test_a_request_that_cannot_get_a_batch_row_in_time_is_refused(serve_config, catalog):
    busy = Host(HostConfig("tiny", max_wait_s=0.2, max_batch=1), BatchDecoder(tiny_tokenizer(), tiny_llama(), max_batch=1,
                                                                              max_wait_s=0.2), catalog)
    with Server(dataclasses.replace(serve_config, host=busy.cfg), host=busy) as srv:
        srv.wait_ready()
        httpx.post(srv.url + "/v1/events", json={"events": [ROOM, SEG]})
        deadline = time.time() + 10  # the segment's card is prefilled while the decoder is idle: let it finish first
        while not busy.decoder._prefixes and time.time() < deadline:
            time.sleep(0.01)
        runner, stop_ids = busy.decoder.runner, busy.decoder.stop_ids
        plain = runner.forward

        def slow(*a, **kw):
            time.sleep(0.5)
            return plain(*a, **kw)

        runner.forward, busy.decoder.stop_ids = slow, set()  # one long generation holds the only row (>= 1.5 s)
        blocker = busy.decoder.submit(CHAT, 4)
        deadline = time.time() + 5
        while busy.decoder.running == 0 and time.time() < deadline:
            time.sleep(0.01)
        r = httpx.post(srv.url + "/v1/host/ask", json={"room": 900, "viewer": 1, "question": "hi?"}, timeout=10)
        assert r.status_code == 503 and "busy" in r.json()["error"]
        with pytest.raises(openai.APIStatusError) as err:
            client(srv).chat.completions.create(model=MODEL, messages=CHAT)
        assert err.value.status_code == 503
        assert "".join(busy.decoder.pieces(blocker)) == blocker.gen.text and blocker.gen.completion_tokens == 4
        del runner.forward
        busy.decoder.stop_ids = stop_ids
        assert httpx.post(srv.url + "/v1/host/ask", json={"room": 900, "viewer": 1, "question": "hi?"},
                          timeout=30).status_code == 200
        metrics = httpx.get(srv.url + "/metrics").text
        assert "livemind_host_ttft_seconds_count 1.0" in metrics and "livemind_host_queue_depth 0.0" in metrics
        drafted, accepted = busy.decoder.drafted, busy.decoder.accepted  # counters: the decoder's totals, read twice
        assert drafted > 0
        for text in (metrics, httpx.get(srv.url + "/metrics").text):
            assert f"livemind_host_draft_tokens_total {float(drafted)}" in text
            assert f"livemind_host_draft_tokens_accepted_total {float(accepted)}" in text
    busy.decoder.close()


def test_the_card_prefix_is_prefilled_once_and_changes_nothing(catalog):
    card_chat = Host(HostConfig("tiny"), BatchDecoder(tiny_tokenizer(), tiny_llama()), catalog).prompt(7, 1, 1, "price?")
    plain = BatchDecoder(tiny_tokenizer(), tiny_llama(), prefix_cache=0)
    cached = BatchDecoder(tiny_tokenizer(), tiny_llama(), prefix_cache=2)
    card_tokens = []
    for question in ("price?", "does it ship today?", "and in blue?"):
        chat = [card_chat[0], {"role": "user", "content": question}]
        a, b = Generation(), Generation()
        assert "".join(plain.stream(chat, 12, gen=a)) == "".join(cached.stream(chat, 12, gen=b))
        assert a.cached_tokens == 0 and b.cached_tokens == (len(*cached._prefixes) if card_tokens else 0)
        card_tokens.append(b.cached_tokens)
        assert (a.prompt_tokens, a.completion_tokens) == (b.prompt_tokens, b.completion_tokens)
    assert len(cached._prefixes) == 1 and card_tokens[1] > 100  # one card (its system message), prefilled once
    other = [{"role": "system", "content": "another card"}, {"role": "user", "content": "hi"}]
    "".join(cached.stream(other, 3))
    "".join(cached.stream([{"role": "system", "content": "a third"}, {"role": "user", "content": "hi"}], 3))
    assert len(cached._prefixes) == 2  # bounded: the oldest card left
    plain.close()
    cached.close()


def test_the_host_runs_alone_without_recommender_models(tmp_path, host):
    from livemind.serve.api.app import ServeConfig
    from livemind.serve.rec.engine import EngineConfig

    cfg = ServeConfig(EngineConfig(None, None, tmp_path / "events.duckdb", cache=None), host=host.cfg)
    with Server(cfg, host=host) as srv:
        assert srv.wait_ready()["generator"] is None
        assert httpx.post(srv.url + "/v1/events", json={"events": [ROOM, {**SEG, "product": 7}]}).json()["accepted"] == 2
        live = httpx.get(srv.url + "/v1/rooms/live").json()["rooms"]
        assert [(r["room"], r["product"], r["sid"]) for r in live] == [(900, 7, None)]
        r = httpx.post(srv.url + "/v1/host/ask", json={"room": 900, "viewer": 1, "question": "price?"}, timeout=60)
        assert r.status_code == 200 and r.json()["product"] == 7
        rec = httpx.post(srv.url + "/v1/recommend", json={"viewer": 1})
        assert rec.status_code == 400 and "host only" in rec.json()["error"]
        assert httpx.post(srv.url + "/v1/admin/reload", json={}).status_code == 400
        assert [m.id for m in client(srv).models.list().data] == [MODEL]


def test_int8_weights_quantise_every_linear_and_still_stream():
    from livemind.errors import ConfigError
    from livemind.serve.host.int8 import Int8Linear, quantize_int8, weight_bytes

    dense = tiny_llama()
    ids = torch.randint(3, 500, (1, 9))
    with torch.no_grad():
        want = dense(input_ids=ids).logits
    fp32_bytes = weight_bytes(dense)
    q = quantize_int8(dense)
    assert not any(type(m) is torch.nn.Linear for m in q.modules())  # every Linear is now int8
    assert sum(isinstance(m, Int8Linear) for m in q.modules()) == 2 * 7 + 1  # 2 layers + head
    with torch.no_grad():
        got = q(input_ids=ids).logits
    assert (got - want).abs().max() < 0.05 * want.abs().max()  # int8 weights, bfloat16 activations: close, not equal
    head = q.lm_head
    assert head.weight_int8.dtype == torch.int8 and head.weight_int8.abs().max() == 127  # the largest weight of a row
    assert weight_bytes(q) < 0.4 * fp32_bytes
    g = Generation()
    decoder = BatchDecoder(tiny_tokenizer(), q)
    text = "".join(decoder.stream(CHAT, 10, gen=g))
    decoder.close()
    assert g.completion_tokens >= 1 and g.finish_reason in ("stop", "length") and text == g.text
    with pytest.raises(ConfigError, match="weights must be 'auto', 'fp32' or 'int8', got 'int4'"):
        HostConfig("x", weights="int4")
    assert HostConfig("x").served_weights == "int8" and HostConfig("x", device="cuda").served_weights == "fp32"
    assert HostConfig("x", weights="fp32").served_weights == "fp32"
    with pytest.raises(ConfigError, match="int8 weights run on the CPU"):
        HostConfig("x", weights="int8", device="cuda")


def test_the_host_can_generate_on_a_remote_openai_server(served, host, serve_config, catalog, tmp_path):
    """The GPU path: the host's decoding on an OpenAI-compatible server (vLLM in production; here another
    livemind service with the tiny model stands in for it, over real HTTP)."""
    from livemind.errors import ConfigError
    from livemind.serve.host.remote import RemoteDecoder
    from livemind.serve.rec.engine import EngineConfig

    cfg = HostConfig(MODEL, max_tokens=24, backend="openai", url=served.url + "/v1")
    front = Host(cfg, RemoteDecoder(served.url + "/v1", MODEL, max_batch=2), catalog)
    front_cfg = dataclasses.replace(serve_config, engine=EngineConfig(None, None, tmp_path / "front.duckdb", cache=None),
                                    host=cfg)
    with Server(front_cfg, host=front) as srv:
        srv.wait_ready()
        assert httpx.post(srv.url + "/v1/events", json={"events": [ROOM, {**SEG, "product": 7}]}).status_code == 200
        r = httpx.post(srv.url + "/v1/host/ask", json={"room": 900, "viewer": 2, "question": "price?"}, timeout=60).json()
        gen = Generation()
        "".join(host.decoder.stream(front.prompt(7, 900, 3, "price?"), 24, gen=gen))  # what upstream decodes
        assert r["answer"] == host.answer_of(gen, 7).answer and r["product"] == 7
        assert r["usage"]["completion_tokens"] == gen.completion_tokens and r["usage"]["prompt_tokens"] == gen.prompt_tokens
        streamed = list(client(srv).chat.completions.create(model=MODEL, messages=CHAT, max_tokens=12, temperature=0,
                                                            stream=True))
        assert "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices) == \
            "".join(host.decoder.stream(CHAT, 12))
    front.decoder.close()
    with pytest.raises(ConfigError, match="needs a url"):
        HostConfig(MODEL, backend="openai")
    with pytest.raises(ConfigError, match="must be an http"):
        RemoteDecoder("gpu:8001", MODEL)


def test_a_card_put_on_a_room_is_prefilled_before_the_first_question(served, host):
    nxt = {**SEG, "index": 1, "start_time": SEG["start_time"] + 30, "product": 9}  # a new product on the card
    assert httpx.post(served.url + "/v1/events", json={"events": [nxt]}).status_code == 200
    deadline = time.time() + 10
    while (host.decoder.warming or len(host.decoder._prefixes) < 3) and time.time() < deadline:
        time.sleep(0.02)
    rules, *cards = sorted(host.decoder._prefixes, key=len)  # the first card (product 7, from the fixture) and this one,
    assert len(cards) == 2 and all(card[:len(rules)] == rules for card in cards)  # and the host's rules they share
    assert len(rules) >= 16 and cards[0][len(rules)] != cards[1][len(rules)]
    r = httpx.post(served.url + "/v1/host/ask", json={"room": 900, "viewer": 8, "question": "price?"}, timeout=60).json()
    assert r["product"] == 9 and r["usage"]["cached_prompt_tokens"] > 100  # the very first question hits the cache


def test_an_upcycled_moe_student_is_served_over_http(tmp_path, catalog):
    """Issue 28's MoE student through the server: upcycled, loaded from its folder as `livemind serve
    --student` does (transformers' forward: livemind's own fits Llama only; fp32, so that its tokens
    can be compared), answers over the official client as the dense student it was upcycled from."""
    from livemind.serve.api.app import ServeConfig
    from livemind.serve.host.forward import HFRunner
    from livemind.serve.host.serving import make_host
    from livemind.serve.rec.engine import EngineConfig
    from livemind.think.backends import load_causal_lm
    from livemind.think.moe import upcycle

    upcycle(tiny_llama(3)).save_pretrained(tmp_path / "moe")
    tiny_tokenizer().save_pretrained(tmp_path / "moe")
    tok, lm = load_causal_lm(str(tmp_path / "moe"))
    moe = make_host(HostConfig(str(tmp_path / "moe"), max_tokens=12, weights="fp32"), tok, lm, catalog)
    assert isinstance(moe.decoder.runner, HFRunner)
    dense = BatchDecoder(tiny_tokenizer(), tiny_llama(3))
    cfg = ServeConfig(EngineConfig(None, None, tmp_path / "events.duckdb", cache=None), host=moe.cfg)
    try:
        with Server(cfg, host=moe) as srv:
            srv.wait_ready()
            chunks = client(srv).chat.completions.create(model=MODEL, messages=CHAT, max_tokens=12, temperature=0,
                                                         stream=True)
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            assert text == "".join(dense.stream(CHAT, 12))  # upcycled = dense before training
            assert httpx.post(srv.url + "/v1/events", json={"events": [ROOM, {**SEG, "product": 7}]}).status_code == 200
            r = httpx.post(srv.url + "/v1/host/ask", json={"room": 900, "viewer": 1, "question": "price?"}, timeout=60)
            assert r.status_code == 200 and r.json()["product"] == 7 and r.json()["usage"]["completion_tokens"] >= 1
    finally:
        moe.decoder.close()
        dense.close()


def test_turns_are_kept_per_room_and_viewer_bounded_in_count_age_and_conversations(catalog):
    """Every viewer id a caller names once kept its turns for ever; now 6 turns, for turns_ttl_s after
    the last, in at most `conversations` (room, viewer) pairs, the least recent dropped first."""
    now = [1000.0]
    host = Host(HostConfig("tiny", turns=4, turns_ttl_s=60.0, conversations=3), None, catalog, clock=lambda: now[0])
    for i in range(3):
        host.remember(900, 1, f"q{i}", f"a{i}")
    assert host.turns_of(900, 1) == (("viewer", "q1"), ("host", "a1"), ("viewer", "q2"), ("host", "a2"))  # the last 4
    for viewer in (2, 3, 4):  # a fourth conversation: the least recent (viewer 1) goes
        now[0] += 1
        host.remember(900, viewer, "hi", "hello")
    assert host.conversations == 3 and host.turns_of(900, 1) == ()
    now[0] += 61  # past the age: nothing is put in a prompt, and the next remember drops the stale ones
    assert host.turns_of(900, 4) == ()
    host.remember(901, 9, "new", "one")
    assert host.conversations == 1 and host.turns_of(901, 9) == (("viewer", "new"), ("host", "one"))
    with pytest.raises(Exception, match="turns_ttl_s > 0 and conversations >= 1"):
        HostConfig("tiny", conversations=0)


def test_host_ask_works_out_the_students_calculations_streamed_and_whole(serve_config, catalog, tmp_path):
    """The student writes `[[name = expression]]`; /v1/host/ask sends the values (livemind.think.calc),
    whole and streamed (the blocks arrive split across pieces), and the answer is what the offline
    evaluation scores for the same text; a student that loops is stopped at its first repeated
    sentence. The upstream is a scripted OpenAI-compatible server."""
    from livemind.serve.host.remote import RemoteDecoder
    from livemind.serve.rec.engine import EngineConfig
    from livemind.think.backends import Completion, at_stop
    from livemind.think.prompts import STOP
    from livemind.think.verify import final_answer
    from tests.think.openai_server import openai_server

    said = ("<think>One is [[u = 18.89]]; [[n = 3]]: [[s = n*u*(1-15/100) if n >= 3 else n*u]], "
            "[[t = s+9.99 if s < 59.00 else s]]</think>3 of them come to [[t]] in total; [[x = u/0]] is not a number.")
    loop = "<think>It is on the card.</think>The answer is 1.5. The answer is 1.5. The answer is 1.5. The answer is 1.5."
    with openai_server({"how much are three?": said, "how much is it?": loop}) as (url, _):
        cfg = HostConfig(MODEL, max_tokens=64, backend="openai", url=url)
        front = Host(cfg, RemoteDecoder(url, MODEL, max_batch=2), catalog)
        front_cfg = dataclasses.replace(serve_config, engine=EngineConfig(None, None, tmp_path / "calc.duckdb", cache=None),
                                        host=cfg)
        with Server(front_cfg, host=front) as srv:
            srv.wait_ready()
            assert httpx.post(srv.url + "/v1/events", json={"events": [ROOM, {**SEG, "product": 7}]}).status_code == 200
            ask = {"room": 900, "viewer": 4, "question": "how much are three?"}
            whole = httpx.post(srv.url + "/v1/host/ask", json=ask, timeout=60).json()
            with httpx.stream("POST", srv.url + "/v1/host/ask", json={**ask, "viewer": 5, "stream": True}, timeout=60) as r:
                events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
            looped = {**ask, "viewer": 6, "question": "how much is it?"}
            again = httpx.post(srv.url + "/v1/host/ask", json=looped, timeout=60).json()
            with httpx.stream("POST", srv.url + "/v1/host/ask", json={**looped, "viewer": 7, "stream": True}, timeout=60) as r:
                loop_events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
        front.decoder.close()
    # a sentence said again ends the host's answer there, whole and streamed, as offline (at_stop)
    assert again["answer"] == "The answer is 1.5." == final_answer(at_stop(Completion(loop), STOP, None, True).text)
    assert again["finish_reason"] == "stop"
    assert "".join(e["delta"] for e in loop_events[:-1]) == "<think>It is on the card.</think>The answer is 1.5. "
    assert whole["answer"] == "3 of them come to 58.16 in total; ? is not a number." == final_answer(said)
    assert whole["reasoning"] == "One is 18.89; 3: 48.17, 58.16"  # 3 x 18.89 = 56.67, -15% = 48.17, +9.99 shipping
    streamed = "".join(e["delta"] for e in events[:-1])
    assert len(events) > 10 and "[[" not in streamed and "]]" not in streamed
    assert streamed.endswith("</think>3 of them come to 58.16 in total; ? is not a number.")
    assert events[-1]["answer"] == whole["answer"]
