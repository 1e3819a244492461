"""A generator checkpoint folder: one writer, one reader, one clear DataError for a bad folder."""

from __future__ import annotations

import json

import pytest
import torch

from livemind.errors import DataError
from livemind.rec.model.checkpoint import FORMAT, load_generator, save_generator, saved_generator_config
from livemind.rec.model.generator import GeneratorConfig, OneLiveGenerator

CFG = GeneratorConfig(levels=2, codebook_size=8, d_model=16, n_heads=2, n_layers=1, max_history=5)


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = OneLiveGenerator(CFG)
    return model, save_generator(model, tmp_path / "gen", "tok-1", note="test")


def test_round_trip_keeps_weights_config_and_extra_state(ckpt):
    model, folder = ckpt
    back = load_generator(folder, "tok-1")
    assert back.cfg == CFG and not back.training
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    state = json.loads((folder / "state.json").read_text())
    assert (state["format"], state["tokenizer_version"], state["note"]) == (FORMAT, "tok-1", "test")
    assert saved_generator_config(folder) == CFG
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "state.json"]  # no temporary files left


def test_another_tokenizer_version_is_refused(ckpt):
    _, folder = ckpt
    with pytest.raises(DataError, match=f"generator checkpoint {folder} was trained on tokenizer tok-1, "
                                        "the live index uses tok-2"):
        load_generator(folder, "tok-2")


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.rename(f.with_name("elsewhere")), "{f}: no such folder; expected a generator checkpoint folder"),
    (lambda f: (f / "state.json").unlink(), "{f}: no state.json; not a generator checkpoint"),
    (lambda f: (f / "state.json").write_text('{"format": "livemind-gen'), "{f}/state.json: truncated or not JSON"),
    (lambda f: (f / "state.json").write_text('{"format": "livemind-reward-model/2"}'),
     "{f}/state.json: format 'livemind-reward-model/2', expected 'livemind-generator-ckpt/1' (not a livemind generator checkpoint)"),
    (lambda f: (f / "state.json").write_text("[1, 2]"),
     "{f}/state.json: format 'list', expected 'livemind-generator-ckpt/1'"),
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:100]),
     "{f}/model.safetensors: truncated or not a safetensors file"),
    (lambda f: (f / "model.safetensors").unlink(), "{f}/model.safetensors: missing; the checkpoint is incomplete"),
])
def test_a_damaged_or_foreign_folder_is_one_data_error_naming_it(ckpt, damage, message):
    _, folder = ckpt
    damage(folder)
    with pytest.raises(DataError) as err:
        load_generator(folder, "tok-1")
    assert str(err.value).startswith(message.format(f=folder))


def test_weights_of_another_architecture_are_refused(ckpt, tmp_path):
    _, folder = ckpt
    other = save_generator(OneLiveGenerator(GeneratorConfig(levels=2, codebook_size=8, d_model=32, n_heads=2,
                                                            n_layers=1, max_history=5)), tmp_path / "other", "tok-1")
    (folder / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(DataError, match=f"{folder}/model.safetensors: weights do not fit its state.json config"):
        load_generator(folder, "tok-1")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_checkpoint_with_a_non_finite_weight_is_refused_naming_it(tmp_path, bad):
    model = OneLiveGenerator(GeneratorConfig(d_model=8, n_heads=2, n_layers=1, codebook_size=4, room_signals=2))
    with torch.no_grad():
        model.log_lp_scale.fill_(bad)
    save_generator(model, tmp_path / "g", "v1")
    with pytest.raises(DataError, match=r"g: non-finite values \(NaN or Infinity\) in log_lp_scale"):
        load_generator(tmp_path / "g", "v1")


def test_a_path_the_file_system_cannot_hold_is_a_data_error_not_a_crash():
    """Found by fuzzing /v1/admin/reload: a 400-byte folder name raised OSError (a 500)."""
    with pytest.raises(DataError, match=r"not a readable path \(File name too long\)"):
        load_generator("ä" * 200, None)
    with pytest.raises(DataError, match=r"no such folder"):
        load_generator("runs/a\x00b", None)  # a NUL byte: no such folder
