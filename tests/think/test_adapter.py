import json

import pytest
import torch

from livemind.errors import ConfigError
from livemind.think.adapter import ADAPTER, META, apply_adapter, extract_adapter
from tests.think.tiny_lm import tiny_llama, tiny_tokenizer

ADAPTED = ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")


def save(lm, path):
    lm.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def fine_tuned(base, rank: int, seed: int = 1, also=None):
    """The base with a rank-`rank` change B A added to every ADAPTED matrix, as a merged LoRA student is."""
    student = tiny_llama()
    student.load_state_dict(base.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, w in student.named_parameters():
            if any(a in name for a in ADAPTED):
                w += 0.05 * torch.randn(w.shape[0], rank, generator=g) @ torch.randn(rank, w.shape[1], generator=g)
            elif also and also in name:
                w += 0.01
    return student


def test_a_merged_lora_student_goes_to_a_small_file_and_back(tmp_path):
    base = tiny_llama()
    b, s = save(base, tmp_path / "base"), save(fine_tuned(base, rank=4), tmp_path / "student")
    meta = extract_adapter(s, b, tmp_path / "adapter", rank=4, note="by hand")
    assert meta["matrices"] == 2 * 3 and meta["rank"] == 4 and meta["note"] == "by hand"  # 2 layers x 3 matrices
    assert json.loads((tmp_path / "adapter" / META).read_text()) == meta
    out = apply_adapter(tmp_path / "adapter", tmp_path / "merged", float_cache=None)
    from transformers import AutoModelForCausalLM

    want = AutoModelForCausalLM.from_pretrained(s).state_dict()
    got = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert got.keys() == want.keys()
    worst = max(float((got[k] - want[k]).abs().max()) for k in want)
    assert 0 < worst < 1e-3  # float16 factors: the change comes back to within rounding
    assert (tmp_path / "adapter" / ADAPTER).stat().st_size < 0.5 * sum(
        f.stat().st_size for f in (tmp_path / "student").glob("*.safetensors"))


def test_what_an_adapter_cannot_carry_is_refused_naming_it(tmp_path):
    base = tiny_llama()
    b = save(base, tmp_path / "base")
    with pytest.raises(ConfigError, match=r"changed beyond rank 2 \(singular value 3 is"):
        extract_adapter(save(fine_tuned(base, rank=4), tmp_path / "r4"), b, tmp_path / "a", rank=2)
    with pytest.raises(ConfigError, match="input_layernorm.weight changed but is not a matrix"):
        extract_adapter(save(fine_tuned(base, rank=2, also="input_layernorm"), tmp_path / "norm"), b, tmp_path / "a")
    with pytest.raises(ConfigError, match="has the same weights as"):
        extract_adapter(b, b, tmp_path / "a")
    with pytest.raises(ConfigError, match="rank 0: expected a whole number >= 1"):
        extract_adapter(b, b, tmp_path / "a", rank=0)
    with pytest.raises(ConfigError, match="expected adapter.safetensors and adapter.json"):
        apply_adapter(tmp_path / "nothing", tmp_path / "m")


def test_an_adapter_refuses_a_base_it_was_not_taken_from(tmp_path):
    base = tiny_llama()
    b = save(base, tmp_path / "base")
    extract_adapter(save(fine_tuned(base, rank=2), tmp_path / "student"), b, tmp_path / "adapter", rank=2)
    save(tiny_llama(seed=5), tmp_path / "base")  # another model now where the base was
    with pytest.raises(ConfigError, match="taken from other weights than .*digest differs"):
        apply_adapter(tmp_path / "adapter", tmp_path / "merged", float_cache=None)


def test_the_cli_keeps_a_student_as_its_adapter_and_says_what_it_cannot(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from livemind.cli import app

    base = tiny_llama()
    b, s = save(base, tmp_path / "base"), save(fine_tuned(base, rank=2), tmp_path / "student")
    monkeypatch.chdir(tmp_path)  # the float cache (runs/cache/models) lands here
    res = CliRunner().invoke(app, ["think", "adapter", s, "--base", b, "--rank", "2", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "6 matrices changed at rank 2" in res.output and (tmp_path / "a" / ADAPTER).is_file()
    res = CliRunner().invoke(app, ["think", "merge", str(tmp_path / "a"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 0 and (tmp_path / "m" / "config.json").is_file(), res.output
    res = CliRunner().invoke(app, ["think", "adapter", s, "--base", b, "--rank", "1", "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "changed beyond rank 1" in res.output
