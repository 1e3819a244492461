"""The alignment experiment end to end, shared by `livemind rec align`, `livemind rec abtest`, the
demo and `benchmarks/rec_abtest.py`: reward model (trained on impressions before the split,
calibrated on those after), GRPO/DPO alignment of a pretrained generator, and the standard A/B
policies. Each artefact is cached in its directory and reused when its config matches.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from livemind.config import from_dict
from livemind.rec.alignment.align import (
    AlignConfig,
    align,
    aligned_config,
    aligned_fingerprints,
    fingerprint,
    save_aligned,
)
from livemind.rec.alignment.reward_model import FORMAT as REWARD_FORMAT
from livemind.rec.alignment.reward_model import (
    Calibration,
    RewardModel,
    RewardModelConfig,
    calibration,
    load_reward_model,
    plot_calibration,
    train_reward_model,
)
from livemind.rec.data.feedback import Impressions, ViewerState
from livemind.rec.data.prepare import RecData
from livemind.rec.model.checkpoint import load_generator, saved_generator_config
from livemind.rec.model.generator import OneLiveGenerator


def reward_model_for(data: RecData, state: ViewerState, cfg: RewardModelConfig, out: str | Path,
                     progress: Callable[[int, int], None] | None = None) -> tuple[RewardModel, Calibration, bool]:
    """(model, held-out calibration, trained now?). Loads `out` when it holds a model of this config
    and tokenizer version; a model of another tokenizer version is an error, never silently retrained."""
    out = Path(out)
    imp = Impressions.from_world(data.world, data.frame, data.codes, data.log.tokenizer_version, state)
    before = imp.time < data.split
    trained = False
    meta_path = out / "reward_model.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("format") == REWARD_FORMAT and from_dict(RewardModelConfig, meta["config"]) == cfg:  # else stale: retrain
        model = load_reward_model(out, data.log.tokenizer_version)
    else:
        n_codes = int(data.codes.max()) + 1  # every SID the world can show is among its segments' codes
        model, _ = train_reward_model(cfg, imp.take(np.flatnonzero(before)), data.log, data.world.viewers.num_rows,
                                      data.world.streamers.num_rows, n_codes, progress)
        trained = True
    cal = calibration(model, imp.take(np.flatnonzero(~before)), data.log)
    if trained:
        model.save(out, {"calibration": cal.rows, "train_impressions": int(before.sum()), "split": data.split})
        plot_calibration(cal, out / "calibration.png")
    return model, cal, trained


def aligned_for(data: RecData, pretrained: OneLiveGenerator, reward: RewardModel, state: ViewerState, cfg: AlignConfig,
                out: str | Path, progress: Callable[[int, int, dict], None] | None = None
                ) -> tuple[OneLiveGenerator, list[dict[str, float]], bool]:
    """(aligned model, per-step history, trained now?); reuses `out` when it was aligned with `cfg`
    from this very pretrained generator with this very reward model (else the cache is stale)."""
    out = Path(out)
    if (aligned_config(out) == cfg and saved_generator_config(out) == pretrained.cfg
            and aligned_fingerprints(out) == (fingerprint(pretrained), fingerprint(reward))):
        with open(out / "align.csv") as f:
            history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
        return load_generator(out, data.log.tokenizer_version), history, False
    res = align(cfg, pretrained, reward, state, data.log, data.live, data.train_rows, progress)
    save_aligned(res, cfg, out, data.log.tokenizer_version, reward=reward, pretrained=pretrained)
    return res.model, res.history, True
