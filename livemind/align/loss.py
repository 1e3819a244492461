"""Policy losses: the clipped surrogate with an optional KL anchor, and DPO.

Clipped surrogate (PPO, Schulman et al. 2017; GRPO's form, Shao et al. 2024), per token t of
completion i with ratio ρ = exp(logp - old_logp):
    ℓ_it = -min(ρ A_i, clip(ρ, 1 - ε_low, 1 + ε_high) A_i) + β KL_it
with KL_it the k3 estimator exp(ref - logp) - (ref - logp) - 1 (unbiased, always ≥ 0).
Token losses are reduced as in TRL's `loss_type`:
- `grpo`: mean over each completion's tokens, then over completions (length-normalised);
- `dapo`: sum over all tokens / number of tokens (every token counts the same);
- `dr_grpo`: sum over all tokens / (completions × max_tokens) (no length bias).
DPO (Rafailov et al. 2023): -log σ(β[(logπ(w) - logπ_ref(w)) - (logπ(l) - logπ_ref(l))]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from livemind.errors import ConfigError, DataError

LossType = Literal["grpo", "dapo", "dr_grpo"]
LOSS_TYPES: tuple[str, ...] = ("grpo", "dapo", "dr_grpo")


@dataclass(frozen=True)
class PolicyLossStats:
    clip_fraction: float  # share of tokens whose ratio was clipped in the direction that matters
    kl: float  # mean k3 KL per token (0 when no reference)
    ratio: float  # mean ratio


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(π || π_ref) from samples of π: exp(d) - d - 1, d = ref - logp.

    >>> kl_k3(torch.tensor([0.0]), torch.tensor([0.0]))
    tensor([0.])
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor | None = None,
                ref_logp: Tensor | None = None, beta: float = 0.0, eps_low: float = 0.2,
                eps_high: float = 0.2, loss_type: LossType = "grpo") -> tuple[Tensor, PolicyLossStats]:
    """Clipped policy loss. logp, old_logp, ref_logp, mask: (N, T) per token; advantages: (N,).

    >>> lp = torch.zeros(1, 1)
    >>> loss, _ = policy_loss(lp, lp, torch.tensor([2.0]))
    >>> float(loss)
    -2.0
    """
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f"loss_type must be one of {list(LOSS_TYPES)}, got {loss_type!r}")
    if beta < 0 or eps_low < 0 or eps_high < 0:
        raise ConfigError(f"beta, eps_low and eps_high must be non-negative, got {beta}, {eps_low}, {eps_high}")
    if beta > 0 and ref_logp is None:
        raise ConfigError(f"beta={beta} needs ref_logp (the reference policy's log-probabilities)")
    if logp.ndim != 2 or old_logp.shape != logp.shape or advantages.shape != logp.shape[:1]:
        raise DataError(f"shapes disagree: logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)}, "
                        f"advantages {tuple(advantages.shape)} (expected (N, T), (N, T), (N,))")
    mask = torch.ones_like(logp, dtype=torch.bool) if mask is None else mask.bool()
    m = mask.float()
    A = advantages[:, None]  # (N, 1)
    ratio = torch.exp(logp - old_logp)  # (N, T)
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    tok = -torch.minimum(ratio * A, clipped * A)  # (N, T)
    kl = torch.zeros_like(tok)
    if ref_logp is not None:
        kl = kl_k3(logp, ref_logp)
        tok = tok + beta * kl
    if loss_type == "grpo":
        loss = ((tok * m).sum(1) / m.sum(1).clamp(min=1.0)).mean()
    elif loss_type == "dapo":
        loss = (tok * m).sum() / m.sum().clamp(min=1.0)
    else:  # dr_grpo
        loss = (tok * m).sum() / (logp.shape[0] * logp.shape[1])
    with torch.no_grad():
        was_clipped = ((ratio < 1 - eps_low) & (A < 0)) | ((ratio > 1 + eps_high) & (A > 0))
        n = m.sum().clamp(min=1.0)
        stats = PolicyLossStats(float((was_clipped.float() * m).sum() / n), float((kl * m).sum() / n),
                                float((ratio * m).sum() / n))
    return loss, stats


def dpo_loss(logp_chosen: Tensor, logp_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
             beta: float = 0.1) -> Tensor:
    """Mean DPO loss over pairs; every argument (P,) sequence log-probabilities.

    >>> z = torch.zeros(1)
    >>> round(float(dpo_loss(z, z, z, z)), 4)  # log 2 when the policy equals the reference
    0.6931
    """
    if not beta > 0:
        raise ConfigError(f"DPO beta must be positive, got {beta}")
    margin = (logp_chosen - ref_chosen) - (logp_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()
