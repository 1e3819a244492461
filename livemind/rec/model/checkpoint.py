"""Generator checkpoints: one format, one writer and one reader for training and alignment.

A checkpoint folder holds `model.safetensors` (the weights) and `state.json` (format, tokenizer
version, generator config, and what wrote it: the trainer's step and losses, or the alignment's
config and fingerprints). Training adds `optimizer.safetensors`. Every file is written to a
temporary name and renamed into place, and `state.json` is written last, so a folder with a
`state.json` always has complete tensors beside it (a crash mid-write leaves the old checkpoint).

Reading refuses, with one `DataError` naming the path and what is wrong, a folder without a
checkpoint, a truncated or unparsable file, a checkpoint of another format (a foreign file), one
trained on another tokenizer version and one with a non-finite weight.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from livemind.config import from_dict
from livemind.errors import ConfigError, DataError
from livemind.rec.model.generator import GeneratorConfig, OneLiveGenerator

FORMAT = "livemind-generator-ckpt/1"


def _replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write a safetensors file atomically (CPU copies, so a GPU model saves the same way)."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))
    _replace(tmp, path)


def write_state(directory: Path, state: dict[str, Any]) -> None:
    """Write `state.json` last and atomically: it marks the tensors beside it as complete."""
    tmp = directory / "state.json.tmp"
    tmp.write_text(json.dumps({"format": FORMAT, **state}, indent=1))
    _replace(tmp, directory / "state.json")


def save_generator(model: OneLiveGenerator, directory: str | Path, tokenizer_version: str,
                   **extra: Any) -> Path:
    """Weights + state.json (format, tokenizer version, generator config, `extra`) into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(model.state_dict(), directory / "model.safetensors")
    write_state(directory, {"tokenizer_version": tokenizer_version, "generator": asdict(model.cfg), **extra})
    return directory


def read_state(directory: str | Path) -> dict[str, Any]:
    """The parsed `state.json` of a generator checkpoint; a DataError for anything else."""
    directory = Path(directory)
    path = directory / "state.json"
    try:
        is_dir = directory.is_dir()
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte: not a checkpoint, and not a crash
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise DataError(f"{str(directory)[:100]!r}: not a readable path ({why}); expected a generator "
                        "checkpoint folder") from None
    if not is_dir:
        raise DataError(f"{directory}: no such folder; expected a generator checkpoint folder")
    if not path.is_file():
        raise DataError(f"{directory}: no state.json; not a generator checkpoint")
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: truncated or not JSON ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise DataError(f"{path}: format {found!r}, expected {FORMAT!r} (not a livemind generator checkpoint)")
    for key in ("tokenizer_version", "generator"):
        if key not in state:
            raise DataError(f"{path}: no {key!r} entry; the checkpoint is incomplete")
    return state


def saved_generator_config(directory: str | Path) -> GeneratorConfig | None:
    """The architecture of the generator checkpoint in `directory`, None when there is none."""
    if not (Path(directory) / "state.json").is_file():
        return None
    return _config(read_state(directory), Path(directory))


def _config(state: dict[str, Any], directory: Path) -> GeneratorConfig:
    try:
        return from_dict(GeneratorConfig, state["generator"], f"{directory}/state.json: generator")
    except ConfigError as exc:
        raise DataError(str(exc)) from exc


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or a DataError naming it when it is missing or truncated."""
    if not path.is_file():
        raise DataError(f"{path}: missing; the checkpoint is incomplete")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{path}: truncated or not a safetensors file ({exc})") from exc


def load_generator(directory: str | Path, tokenizer_version: str | None,
                   device: str | torch.device = "cpu") -> OneLiveGenerator:
    """The trained (or aligned) model of a checkpoint folder, in eval mode on `device`, refusing one
    of another tokenizer version (`tokenizer_version=None` skips that check, for inspection)."""
    directory = Path(directory)
    state = read_state(directory)
    if tokenizer_version is not None and state["tokenizer_version"] != tokenizer_version:
        raise DataError(f"generator checkpoint {directory} was trained on tokenizer {state['tokenizer_version']}, "
                        f"the live index uses {tokenizer_version}")
    model = OneLiveGenerator(_config(state, directory))
    tensors = load_tensors(directory / "model.safetensors")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise DataError(f"generator checkpoint {directory}: non-finite values (NaN or Infinity) in {', '.join(bad[:5])}"
                        f"{' ...' if len(bad) > 5 else ''}; expected finite weights (retrain or realign it)")
    scale = tensors.get("log_lp_scale")
    if scale is not None and scale.dim() == 0:  # saved before each level had its weight: one for all
        tensors["log_lp_scale"] = scale.expand(model.cfg.levels).clone()
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:  # missing / unexpected keys or shapes: weights of another model
        raise DataError(f"{directory}/model.safetensors: weights do not fit its state.json config ({exc})") from exc
    return model.to(device).eval()
