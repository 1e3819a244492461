"""Several rewards -> one, with explicit weights.

Two orders of combining, as in TRL's `multi_objective_aggregation`:
- `sum_then_normalize`: r = Σ_m w_m r_m; the advantage step normalises r afterwards. Objectives
  on large scales (watch seconds) dominate unless their weights shrink them.
- `normalize_then_sum` (GDPO-style): each objective is first standardised within its group,
  z_m = (r_m - mean_g r_m) / (std_g r_m + eps), then r = Σ_m w_m z_m. Scales stop mattering; the
  weights say how much each objective counts.

A reward may be NaN ("not applicable", TRL's None): it contributes nothing to its row; a row where
every objective is NaN is an error, never a silent zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from torch import Tensor

from livemind.errors import ConfigError, DataError

Aggregation = Literal["sum_then_normalize", "normalize_then_sum"]
AGGREGATIONS: tuple[str, ...] = ("sum_then_normalize", "normalize_then_sum")
EPS = 1e-4


def check_weights(weights: Mapping[str, float], known: Sequence[str]) -> dict[str, float]:
    """Validate objective weights: known names, finite, non-negative, not all zero.

    >>> check_weights({"click": 1.0, "gift": 0.5}, ["click", "watch", "gift"])
    {'click': 1.0, 'gift': 0.5}
    """
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise ConfigError(f"unknown objective(s) {unknown}; expected some of {list(known)}")
    out: dict[str, float] = {}
    for name, w in weights.items():
        try:
            w = float(w)
        except (TypeError, ValueError):
            raise ConfigError(f"weight of {name!r} must be a number, got {w!r}") from None
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"weight of {name!r} must be finite and non-negative, got {w}")
        out[name] = w
    if not out or not any(out.values()):
        raise ConfigError(f"objective weights are all zero or empty ({dict(weights)}); give at least one a positive weight")
    return out


def check_aggregation(mode: str) -> Aggregation:
    if mode not in AGGREGATIONS:
        raise ConfigError(f"aggregation must be one of {list(AGGREGATIONS)}, got {mode!r}")
    return mode  # type: ignore[return-value]


def _group_stats(x: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """NaN-aware mean and (unbiased) std of each group of consecutive rows, broadcast back: x (N, M)."""
    g = x.view(-1, group_size, x.shape[-1])  # (B, G, M)
    n = (~g.isnan()).sum(1, keepdim=True).clamp(min=1)
    mean = g.nansum(1, keepdim=True) / n
    var = ((g - mean) ** 2).nansum(1, keepdim=True) / (n - 1).clamp(min=1)
    return mean.expand_as(g).reshape_as(x), var.sqrt().expand_as(g).reshape_as(x)


def aggregate(rewards: Tensor, weights: Tensor, group_size: int, mode: Aggregation = "sum_then_normalize") -> Tensor:
    """One reward per row from M objectives. rewards: (N, M), NaN = not applicable; weights: (M,); -> (N,).

    Rows come in groups of `group_size` consecutive completions of one prompt (N = B * G).

    >>> import torch
    >>> r = torch.tensor([[1.0, 0.0], [3.0, 10.0]])
    >>> aggregate(r, torch.tensor([1.0, 0.1]), group_size=2)
    tensor([1., 4.])
    """
    if rewards.ndim != 2 or rewards.shape[1] != weights.shape[0]:
        raise DataError(f"rewards must be (N, {weights.shape[0]}), got {tuple(rewards.shape)}")
    if group_size < 1 or rewards.shape[0] % group_size:
        raise DataError(f"{rewards.shape[0]} rows do not split into groups of {group_size}")
    empty = rewards.isnan().all(1)
    if empty.any():
        raise DataError(f"row {int(empty.nonzero()[0])} has no applicable reward (every objective is None/NaN)")
    if mode == "normalize_then_sum":
        mean, std = _group_stats(rewards, group_size)
        rewards = (rewards - mean) / (std + EPS)
    elif mode != "sum_then_normalize":
        raise ConfigError(f"aggregation must be one of {list(AGGREGATIONS)}, got {mode!r}")
    return (rewards * weights).nansum(1)
