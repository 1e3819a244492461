"""Group-relative advantages (GRPO, Shao et al. 2024; Dr. GRPO, Liu et al. 2025).

A_i = r_i - mean(r of i's group), then divided by a scale:
- `group`: the group's std (GRPO). Equalises easy and hard prompts; Dr. GRPO argues it biases
  toward groups with little spread.
- `batch`: the std of all rewards in the batch (one scale for every group).
- `none`: no division (Dr. GRPO); the reward's own units set the step size.
Stds are unbiased (ddof 1), as `torch.std`, plus EPS so an all-equal group gives A = 0, not NaN.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from livemind.errors import ConfigError, DataError

Scale = Literal["group", "batch", "none"]
SCALES: tuple[str, ...] = ("group", "batch", "none")
EPS = 1e-4


def group_advantages(rewards: Tensor, group_size: int, scale: Scale = "group") -> Tensor:
    """rewards: (B*G,) in groups of `group_size` consecutive rows -> advantages (B*G,).

    >>> import torch
    >>> group_advantages(torch.tensor([1.0, 3.0, 5.0, 5.0]), 2, scale="none")
    tensor([-1.,  1.,  0.,  0.])
    """
    if scale not in SCALES:
        raise ConfigError(f"advantage scale must be one of {list(SCALES)}, got {scale!r}")
    if rewards.ndim != 1 or group_size < 1 or rewards.shape[0] % group_size:
        raise DataError(f"rewards of shape {tuple(rewards.shape)} do not split into groups of {group_size}")
    g = rewards.view(-1, group_size)  # (B, G)
    adv = g - g.mean(1, keepdim=True)
    if scale == "group":
        adv = adv / ((g.std(1, keepdim=True) if group_size > 1 else 0.0) + EPS)
    elif scale == "batch":
        adv = adv / ((rewards.std() if rewards.numel() > 1 else 0.0) + EPS)
    return adv.reshape(-1)
