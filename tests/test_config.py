"""The one config path: every shipped YAML loads into its dataclass, and bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from livemind.config import from_dict, load_config
from livemind.errors import ConfigError
from livemind.paths import REPO_ROOT
from livemind.rec.alignment.align import AlignConfig
from livemind.rec.data.room_signals import SignalConfig
from livemind.rec.eval.abtest import ABConfig
from livemind.rec.model.generator import GeneratorConfig
from livemind.rec.model.train import TrainConfig
from livemind.rec.tokenizer.fit import TokenizerConfig
from livemind.think.distill import DistillConfig
from livemind.think.grpo import GRPOSettings
from livemind.world.simulator import WorldConfig

NOT_OURS = {"configs/think/accelerate_fsdp.yaml"}  # accelerate's own launcher config


def config_class(path: Path) -> type:
    rel = path.relative_to(REPO_ROOT / "configs").as_posix()
    if rel.startswith("world/"):
        return WorldConfig
    if rel.startswith("think/distill"):
        return DistillConfig
    if rel.startswith("think/grpo"):
        return GRPOSettings
    return {"rec/tokenizer.yaml": TokenizerConfig, "rec/align.yaml": AlignConfig, "rec/abtest.yaml": ABConfig,
            "rec/generator.yaml": TrainConfig, "rec/generator-prior.yaml": TrainConfig}[rel]


SHIPPED = sorted(p for p in (REPO_ROOT / "configs").rglob("*.yaml")
                 if p.relative_to(REPO_ROOT).as_posix() not in NOT_OURS)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(REPO_ROOT / "configs").as_posix())
def test_every_shipped_yaml_loads_into_its_dataclass_and_says_how_to_run_it(path):
    cfg = load_config(path, config_class(path))
    assert type(cfg) is config_class(path)
    assert "livemind" in path.read_text().split("\n\n")[0] or "benchmarks/" in path.read_text()  # header: how to run


def test_a_yaml_exponent_without_a_dot_is_named_as_a_string(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("lr: 1e-3\n")  # YAML 1.1 reads this as the string '1e-3'
    with pytest.raises(ConfigError) as err:
        load_config(bad, TrainConfig)
    assert str(err.value) == (f"{bad}.lr: expected a number, got '1e-3' (str); YAML read '1e-3' as a string: "
                              "write it with a dot before the exponent (e.g. 1.0e-3)")
    bad.write_text("lr: 1.0e-3\n")
    assert load_config(bad, TrainConfig).lr == 0.001


@pytest.mark.parametrize("data, message", [
    ({"generator": {"n_heads": 0}}, "config.generator: n_heads must be at least 1, got 0"),
    ({"generator": {"decode": "beam"}}, "config.generator.decode: expected one of 'mtp', 'ar', got 'beam' (str)"),
    ({"generator": {"qk_norm": 1}}, "config.generator.qk_norm: expected true or false, got 1 (int)"),
    ({"epochs": 2.5}, "config.epochs: expected an integer, got 2.5 (float)"),
    ({"epochs": True}, "config.epochs: expected an integer, got True (bool)"),
    ({"generator": {"level_weights": [1, "x", 1]}}, "config.generator.level_weights[1]: expected a number, got 'x' (str)"),
    ({"generator": {"signals": {"window": 0}}}, "config.generator.signals: window must be positive, got 0.0"),
    ({"generator": {"signals": 3}}, "config.generator.signals: expected a mapping for SignalConfig, got 3 (int)"),
    ({"generator": {"levels": 2, "level_weights": [1.0, 1.0, 1.0]}},
     "config.generator: level_weights has 3 entries for 2 levels"),
])
def test_bad_values_name_the_field_and_what_was_expected(data, message):
    with pytest.raises(ConfigError) as err:
        from_dict(TrainConfig, data)
    assert str(err.value) == message


def test_derived_defaults_and_conversions():
    cfg = from_dict(GeneratorConfig, {"levels": 2, "d_model": 32, "n_heads": 2, "signals": {"history": 5}})
    assert cfg.level_weights == (1.0, 1.0)  # derived from levels
    assert cfg.signals == SignalConfig(window=3600.0, history=5)
    assert from_dict(AlignConfig, {"objectives": {"click": 1, "purchase": 2}}).objectives == {"click": 1.0, "purchase": 2.0}
    with pytest.raises(ConfigError, match=r"config.objectives.click: expected a number, got 'one' \(str\)"):
        from_dict(AlignConfig, {"objectives": {"click": "one"}})
