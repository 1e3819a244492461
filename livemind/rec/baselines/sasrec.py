"""SASRec (Kang & McAuley, ICDM 2018) and a LiveRec-style availability-aware variant (Rappaz et
al., RecSys 2021): the ID-based sequential baselines OneLive is measured against.

Design choices:
- Items are ids 1..n_items; 0 is padding. Learned item and position embeddings, item embeddings
  scaled by sqrt(d); Xavier-normal initialisation. The paper's block layout, not the usual
  pre-LayerNorm one: LayerNorm on the *queries* only, keys and values from the un-normalised
  stream, the normalised queries carry the residual; then LayerNorm and a point-wise ReLU
  feed-forward with its own residual. Dropout on embeddings, attention weights and branches;
  padded positions are masked as keys; a final LayerNorm. (This layout, not a pre-LayerNorm GELU
  one, reaches the paper's HR@10 on sasrec-games.)
- Training is the paper's: every position predicts the next item, binary cross-entropy of the
  positive against one sampled negative per position; scores are dot products with the item
  embeddings (shared input/output embeddings).
- `repeat_aware=True` (LiveRec): a learned bias per (times the candidate appears in the history,
  bucketed) and per "is the last item", added to the dot product, so repeat consumption is
  modelled explicitly instead of being left to the embeddings.
- Negatives come from a `NegativeSampler`: uniform over the catalogue, uniform over the items the
  user never had (`unseen_negatives`, the paper's sampler), or drawn from
  the items *available at the target's time* (LiveRec's availability-aware training; see
  `livemind.rec.eval.protocol`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

REPEAT_BUCKETS = 5  # 0, 1, 2, 3-4, 5+ earlier occurrences of the candidate


@dataclass(frozen=True)
class SASRecConfig:
    n_items: int  # catalogue size; ids 1..n_items, 0 = padding
    d_model: int = 50  # the paper's setting on Games
    n_blocks: int = 2
    n_heads: int = 1
    max_len: int = 50  # the paper uses 50 on Games
    dropout: float = 0.5  # the paper's dropout on the sparse Amazon sets
    repeat_aware: bool = False
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ValueError(f"n_items must be at least 1, got {self.n_items}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("n_blocks", "max_len", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def repeat_bucket(count: Tensor) -> Tensor:
    """Earlier occurrences -> bucket 0, 1, 2, 3 (3-4), 4 (5+)."""
    return torch.where(count >= 5, 4, torch.where(count >= 3, 3, count)).long()


class _Block(nn.Module):
    """The paper's block: x <- LN(x) + MHA(LN(x), x, x); x <- LN(x); x <- x + FFN(x)."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.h = cfg.n_heads
        self.p = cfg.dropout
        self.nq, self.nf = nn.LayerNorm(d, eps=1e-8), nn.LayerNorm(d, eps=1e-8)
        self.q, self.kv, self.o = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, d), nn.Dropout(cfg.dropout), nn.ReLU(), nn.Linear(d, d),
                                nn.Dropout(cfg.dropout))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, T, d = x.shape
        hd = d // self.h
        queries = self.nq(x)
        q = self.q(queries).view(B, T, self.h, hd).transpose(1, 2)  # (B, H, T, hd)
        k, v = self.kv(x).view(B, T, 2, self.h, hd).permute(2, 0, 3, 1, 4)  # (B, H, T, hd) each
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.p if self.training else 0.0)
        x = self.nf(queries + self.o(y.transpose(1, 2).reshape(B, T, d)))
        return x + self.ff(x)


class SASRec(nn.Module):
    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.item = nn.Embedding(cfg.n_items + 1, cfg.d_model, padding_idx=0)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([_Block(cfg) for _ in range(cfg.n_blocks)])
        self.norm = nn.LayerNorm(cfg.d_model, eps=1e-8)
        self.repeat_bias = nn.Embedding(REPEAT_BUCKETS, 1) if cfg.repeat_aware else None
        self.last_bias = nn.Parameter(torch.zeros(1)) if cfg.repeat_aware else None
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item.weight[0].zero_()
        if self.repeat_bias is not None:
            nn.init.zeros_(self.repeat_bias.weight)

    def hidden(self, seq: Tensor) -> Tensor:
        """seq: (B, T) item ids, left-padded with 0 -> (B, T, d) hidden state after each position."""
        B, T = seq.shape
        if T > self.cfg.max_len:
            raise ValueError(f"sequences of {T} items are longer than max_len {self.cfg.max_len}")
        x = self.item(seq) * math.sqrt(self.cfg.d_model) + self.pos(torch.arange(T))
        valid = seq > 0  # (B, T)
        x = self.drop(x) * valid[..., None]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        mask = (causal[None] & valid[:, None, :]) | torch.eye(T, dtype=torch.bool)[None]  # (B, T, T)
        for block in self.blocks:
            x = block(x, mask[:, None]) * valid[..., None]
        return self.norm(x)

    def repeat_term(self, seq: Tensor, cand: Tensor, upto: Tensor | None = None) -> Tensor:
        """Repeat-aware bias of candidates (B, T, C) or (B, C) given the history seq (B, T).

        With `upto` (T, T) bool, position t only counts seq[:t+1]; otherwise the whole sequence.
        """
        if self.repeat_bias is None:
            return torch.zeros(cand.shape)
        if cand.dim() == 2:  # (B, C): against the whole history
            count = (seq[:, None, :] == cand[..., None]).sum(-1)  # (B, C)
            last = cand == seq[:, -1:]
        else:  # (B, T, C): position t sees seq[:t+1]
            eq = seq[:, None, None, :] == cand[..., None]  # (B, T, C, T)
            count = (eq & upto[None, :, None, :]).sum(-1)  # (B, T, C)
            last = cand == seq[..., None]
        count = torch.where(cand > 0, count, 0)
        return self.repeat_bias(repeat_bucket(count))[..., 0] + self.last_bias * last

    def score(self, seq: Tensor, cand: Tensor) -> Tensor:
        """Scores (B, C) of candidate items cand (B, C) after the whole sequence seq (B, T)."""
        h = self.hidden(seq)[:, -1]  # (B, d)
        return torch.einsum("bd,bcd->bc", h, self.item(cand)) + self.repeat_term(seq, cand)

    def loss(self, seq: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        """The paper's BCE: seq, pos, neg (B, T); positions where pos == 0 are ignored."""
        h = self.hidden(seq)  # (B, T, d)
        cand = torch.stack([pos, neg], dim=-1)  # (B, T, 2)
        logits = torch.einsum("btd,btcd->btc", h, self.item(cand))
        if self.repeat_bias is not None:
            T = seq.shape[1]
            logits = logits + self.repeat_term(seq, cand, torch.ones(T, T, dtype=torch.bool).tril())
        valid = (pos > 0).float()
        bce = F.binary_cross_entropy_with_logits(logits, torch.stack([torch.ones_like(valid), torch.zeros_like(valid)], -1),
                                                 reduction="none").sum(-1)  # (B, T)
        return (bce * valid).sum() / valid.sum().clamp(min=1.0)


# (rng, positives (B, T) item ids, row indices of the batch) -> negatives (B, T)
NegativeSampler = Callable[[np.random.Generator, np.ndarray, np.ndarray], np.ndarray]


def uniform_negatives(n_items: int) -> NegativeSampler:
    """Uniform over the catalogue (ids 1..n_items), never the positive itself."""
    def sample(rng: np.random.Generator, pos: np.ndarray, rows: np.ndarray) -> np.ndarray:
        neg = rng.integers(1, n_items + 1, size=pos.shape)
        clash = neg == pos
        neg[clash] = neg[clash] % n_items + 1  # never the positive itself
        return neg
    return sample


def unseen_negatives(n_items: int, seqs: list[np.ndarray], max_rounds: int = 1000) -> NegativeSampler:
    """The paper's sampler: uniform over the items the user never had; batch row j is user `rows[j]` of `seqs`."""
    width = n_items + 1
    had = np.unique(np.concatenate([i * width + np.asarray(s, dtype=np.int64) for i, s in enumerate(seqs)]))  # (user, item) keys
    if np.bincount(had // width).max(initial=0) >= n_items:
        raise ValueError(f"a user had all {n_items} items: there is no unseen negative to draw")

    def sample(rng: np.random.Generator, pos: np.ndarray, rows: np.ndarray) -> np.ndarray:
        neg = rng.integers(1, width, size=pos.shape)
        base = rows.astype(np.int64)[:, None] * width
        for _ in range(max_rounds):
            key = base + neg
            clash = had[np.searchsorted(had, key).clip(max=len(had) - 1)] == key
            if not clash.any():
                return neg
            neg[clash] = rng.integers(1, width, size=int(clash.sum()))
        raise RuntimeError(f"no unseen negative found in {max_rounds} rounds of draws")
    return sample


def pad_left(seqs: list[np.ndarray], length: int, dtype: type = np.int64) -> np.ndarray:
    """The last `length` entries of each sequence, left-padded with 0: (N, length)."""
    out = np.zeros((len(seqs), length), dtype=dtype)
    for i, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[i, length - len(s):] = s
    return out


def train_sasrec(cfg: SASRecConfig, seqs: list[np.ndarray], sampler: NegativeSampler | None = None,
                 progress: Callable[[int, int, float], None] | None = None) -> tuple[SASRec, list[float]]:
    """Train on training sequences (item ids 1..n_items, oldest first); returns the model and each epoch's mean loss.

    Each sequence contributes its last max_len + 1 items: inputs seq[:-1], targets seq[1:].
    `sampler` gets the row index of each sequence so it can look up per-position side data.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    sampler = sampler or uniform_negatives(cfg.n_items)
    arr = pad_left(seqs, cfg.max_len + 1)  # (N, T+1)
    keep = np.flatnonzero((arr > 0).sum(1) >= 2)  # at least one (input, target) pair
    if not len(keep):
        raise ValueError("no training sequence has two or more items")
    model = SASRec(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
    steps = math.ceil(len(keep) / cfg.batch_size)
    epoch_losses: list[float] = []
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(keep)
        total = 0.0
        for i in range(steps):
            rows = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            seq, pos = arr[rows, :-1], arr[rows, 1:]
            neg = np.where(pos > 0, sampler(rng, pos, rows), 0)
            loss = model.loss(torch.from_numpy(seq), torch.from_numpy(pos), torch.from_numpy(neg))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        epoch_losses.append(total / steps)
        if progress:
            progress(epoch + 1, cfg.epochs, epoch_losses[-1])
    return model.eval(), epoch_losses
