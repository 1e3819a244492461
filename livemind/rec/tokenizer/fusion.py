"""Content + ID fusion and behaviour post-alignment (OneLive §1).

    x_mllm = MLP(x30 ⊕ xpool)                    current window and the room's pooled history
    x      = λ · x_id + (1 − λ) · x_mllm          gated with a learned streamer-ID embedding
    x_ia   = RoomTower(x)                         unit vector: what residual k-means quantises

The room tower is trained as one side of a two-tower viewer–room model with in-batch softmax
(InfoNCE) on recent feedback, the paper's "real-time collaborative post-alignment": rooms that
the same viewers engage with end up close, so semantic IDs carry behaviour as well as content.

Design choices (the paper gives no sizes): streamer IDs are hashed into `id_buckets` embeddings so
new streamers need no table growth; λ is one learned scalar (or one per dimension with
`gate="vector"`), initialised small so content leads; both parts are layer-normalised before
the gate (otherwise a free ID embedding can dominate by growing its norm, whatever λ says);
in-batch duplicates of the positive segment are masked out of the negatives, and each positive
can get a temporal hard negative (the same room showing other content).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class FusionConfig:
    content_dim: int = 384  # x30 and xpool size (MiniLM: 384)
    hidden_dim: int = 256  # fused representation size
    out_dim: int = 64  # size of the quantised vector x_ia
    id_buckets: int = 4096  # hashed streamer-ID embeddings
    viewer_buckets: int = 65536  # hashed viewer-ID embeddings (viewer tower)
    gate: Literal["scalar", "vector"] = "scalar"  # λ: one number, or one per hidden dimension
    init_lambda: float = 0.1  # initial weight of the ID embedding
    temperature: float = 0.05  # InfoNCE temperature
    use_pool: bool = True  # feed xpool (the room's history) to the MLP; False = current window only

    def __post_init__(self) -> None:
        for name in ("content_dim", "hidden_dim", "out_dim", "id_buckets", "viewer_buckets"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.gate not in ("scalar", "vector"):
            raise ValueError(f"gate must be 'scalar' or 'vector', got {self.gate!r}")
        if not 0 < self.init_lambda < 1:
            raise ValueError(f"init_lambda must be in (0, 1), got {self.init_lambda}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


class ContentFusion(nn.Module):
    """x = λ·x_id + (1 − λ)·MLP(x30 ⊕ xpool)."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mllm = _mlp(2 * cfg.content_dim, cfg.hidden_dim, cfg.hidden_dim)
        self.id_emb = nn.Embedding(cfg.id_buckets, cfg.hidden_dim)
        nn.init.normal_(self.id_emb.weight, std=0.02)
        size = 1 if cfg.gate == "scalar" else cfg.hidden_dim
        self.gate_logit = nn.Parameter(torch.full((size,), math.log(cfg.init_lambda / (1 - cfg.init_lambda))))

    @property
    def lam(self) -> Tensor:
        return torch.sigmoid(self.gate_logit)

    def forward(self, x30: Tensor, xpool: Tensor, streamer: Tensor) -> Tensor:
        # x30, xpool: (B, Dc); streamer: (B,) int64
        # both parts are layer-normalised, so λ weighs them and not their norms
        if not self.cfg.use_pool:
            xpool = torch.zeros_like(xpool)
        x_mllm = F.layer_norm(self.mllm(torch.cat([x30, xpool], dim=-1)), (self.cfg.hidden_dim,))  # (B, H)
        x_id = F.layer_norm(self.id_emb(streamer % self.cfg.id_buckets), (self.cfg.hidden_dim,))  # (B, H)
        lam = self.lam
        return lam * x_id + (1 - lam) * x_mllm  # (B, H)


class RoomTower(nn.Module):
    """Fused room representation -> unit vector x_ia (B, out_dim)."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.fusion = ContentFusion(cfg)
        self.head = _mlp(cfg.hidden_dim, cfg.hidden_dim, cfg.out_dim)

    def forward(self, x30: Tensor, xpool: Tensor, streamer: Tensor) -> Tensor:
        return F.normalize(self.head(self.fusion(x30, xpool, streamer)), dim=-1)  # (B, out_dim)


class ViewerTower(nn.Module):
    """Hashed viewer ID -> unit vector (B, out_dim)."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.emb = nn.Embedding(cfg.viewer_buckets, cfg.hidden_dim)
        nn.init.normal_(self.emb.weight, std=0.1)
        self.head = _mlp(cfg.hidden_dim, cfg.hidden_dim, cfg.out_dim)

    def forward(self, viewer: Tensor) -> Tensor:
        return F.normalize(self.head(self.emb(viewer % self.cfg.viewer_buckets)), dim=-1)


def in_batch_softmax_loss(u: Tensor, r: Tensor, item: Tensor, weight: Tensor, temperature: float,
                          r_hard: Tensor | None = None, hard_ok: Tensor | None = None) -> Tensor:
    """Weighted InfoNCE over in-batch negatives, plus an optional hard negative per row.

    u, r: (B, D) unit viewer / room vectors of B positive pairs; item: (B,) id of each positive
    (rows with the same item are not negatives of each other); weight: (B,) per-pair weight;
    r_hard: (B, D) one extra negative per row (e.g. the same room showing other content), used
    where hard_ok: (B,) bool is true.
    """
    logits = u @ r.T / temperature  # (B, B)
    same = item[:, None] == item[None, :]
    eye = torch.eye(len(item), dtype=torch.bool, device=u.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    if r_hard is not None:
        hard = (u * r_hard).sum(-1, keepdim=True) / temperature  # (B, 1)
        if hard_ok is not None:
            hard = hard.masked_fill(~hard_ok[:, None], float("-inf"))
        logits = torch.cat([logits, hard], dim=1)  # (B, B + 1)
    target = torch.arange(len(item), device=u.device)
    losses = F.cross_entropy(logits, target, reduction="none")  # (B,)
    return (losses * weight).sum() / weight.sum()
