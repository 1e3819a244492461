"""OneLive's generator (§2–3): a decoder-only model that reads a viewer's history of semantic IDs
and generates the SID of the next room to show.

Design choices, each switchable for ablation:
- History tokens: sum of per-level code embeddings of the SID the room had *when the viewer
  watched it*, an action-kind embedding and a watch-time bucket embedding; the generation anchor
  [BOS] is a learned token carrying the request time.
- Time features (`time_features`): x <- x + MLP(hour, day of week, weekend, log gap to now) on
  every history token and on [BOS].
- Attention: pre-RMSNorm blocks; QK norm (`qk_norm`): softmax(RMSNorm(Q) RMSNorm(K)^T / sqrt(d)) V;
  output gate (`time_gate`): O = (MHA(...) ⊙ σ(X W_θ)) W_O, computed from the query side.
- Sequential MTP (`decode="mtp"`): the main stack predicts level 1 at [BOS]; light one-block
  modules predict levels 2..L in turn from the previous module's hidden state and the chosen
  code, attending to the main stack's last-layer keys and values (a shared KV cache).
  `decode="ar"` instead appends each chosen code as a token and runs the full stack again.
- Semantic codes (`code_dim` > 0): the tokenizer's codebook centroids (L, K, code_dim) are a
  buffer of the model. A code's input embedding adds a learned projection of its centroid, and
  each level's logits add a bilinear score between the hidden state and every centroid, so codes
  whose centroids are close (similar content) share what is learned about them instead of each
  of the K codes being learned on its own.
- Live-room prior (`room_signals` > 0): what a SID cannot say — that a live room is the viewer's
  favourite streamer, or that half the site is in it now — comes as a few identity signals per
  live room (`livemind.rec.data.room_signals`); a small MLP turns them into a log-score added to
  log P(SID). It is trained jointly with the generator by a softmax over the rooms live at each
  target's time (`TrainConfig.room_loss`), so the generator learns what content adds beyond them.
- No biases in attention projections; GELU MLPs; embeddings initialised at std 0.02 (GPT-2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from livemind.rec.data.room_signals import SignalConfig
from livemind.rec.data.watch import History
from livemind.world.schema import EVENT_KINDS

# The weight of log P(SID) in a room's score is exp(log_lp_scale) clamped to this range of its log:
# an optimiser (the prior's L-BFGS refit, alignment) cannot drive it to 0 or overflow it, and a score
# never needs a division by it. At the floor (e^-9 ~ 1.2e-4) the prior ranks alone, which the
# trainer reports in words (`prior.generator_share`).
LOG_LP_WEIGHT_RANGE = (-9.0, 4.0)
N_TIME_FEATURES = 6  # sin/cos hour, sin/cos day of week, weekend flag, log1p(hours before now)


@dataclass(frozen=True)
class GeneratorConfig:
    levels: int = 3  # SID length
    codebook_size: int = 256  # codes per level
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 3  # main decoder depth
    mlp_ratio: int = 4
    n_kinds: int = len(EVENT_KINDS)  # action kinds of history tokens
    watch_buckets: int = 12  # log2-spaced watch-time buckets
    max_history: int = 50
    decode: Literal["mtp", "ar"] = "mtp"
    qk_norm: bool = True
    time_gate: bool = True  # sigmoid output gate on attention
    time_features: bool = True  # x += MLP(time features)
    level_weights: tuple[float, ...] | None = None  # loss weight of each level, w_0..w_{L-1}; None: all 1
    dropout: float = 0.0
    code_dim: int = 0  # size of the codebook centroids read as semantic code features (0 = off)
    room_signals: int = 0  # identity signals per live room read by the live-room prior (0 = off)
    signals: SignalConfig = field(default_factory=SignalConfig)  # how the prior's signals are read

    def __post_init__(self) -> None:
        if self.n_heads < 1:
            raise ValueError(f"n_heads must be at least 1, got {self.n_heads}")
        if self.level_weights is None:  # derived default: every level weighs the same
            object.__setattr__(self, "level_weights", (1.0,) * self.levels)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if self.decode not in ("mtp", "ar"):
            raise ValueError(f"decode must be 'mtp' or 'ar', got {self.decode!r}")
        if len(self.level_weights) != self.levels:
            raise ValueError(f"level_weights has {len(self.level_weights)} entries for {self.levels} levels")
        if any(w < 0 for w in self.level_weights) or not any(self.level_weights):
            raise ValueError(f"level_weights must be non-negative and not all zero, got {self.level_weights}")
        for name in ("levels", "codebook_size", "n_layers", "max_history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("code_dim", "room_signals"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")


def time_features(t: Tensor, now: Tensor) -> Tensor:
    """(..., 6) float32 calendar features of Unix times `t` relative to request times `now` (broadcast).

    Computed in float64: float32 resolves Unix seconds only to ~128 s.
    """
    t, now = t.double(), now.double()
    hour = (t % 86400.0) / 3600.0
    dow = torch.floor(t / 86400.0 + 3.0) % 7.0  # 1970-01-01 was a Thursday: Monday = 0
    gap = torch.clamp(now - t, min=0.0) / 3600.0
    return torch.stack([
        torch.sin(2 * math.pi * hour / 24), torch.cos(2 * math.pi * hour / 24),
        torch.sin(2 * math.pi * dow / 7), torch.cos(2 * math.pi * dow / 7),
        (dow >= 5).double(), torch.log1p(gap),
    ], dim=-1).float()


class GatedAttention(nn.Module):
    """Multi-head attention with optional QK RMSNorm and a sigmoid output gate."""

    def __init__(self, cfg: GeneratorConfig, shared_kv: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        d, self.h = cfg.d_model, cfg.n_heads
        self.hd = d // self.h
        self.q = nn.Linear(d, d, bias=False)
        # an MTP module reads the main stack's keys and values: it has no projection of its own
        self.kv = None if shared_kv else nn.Linear(d, 2 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.gate = nn.Linear(d, d) if cfg.time_gate else None  # W_θ
        self.q_norm = nn.RMSNorm(self.hd) if cfg.qk_norm else None
        self.k_norm = nn.RMSNorm(self.hd) if cfg.qk_norm and not shared_kv else None
        self.track_logits = False  # when set, each forward records the largest attention logit (Figure 3)
        self.max_logit: float | None = None

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        B, T, _ = x.shape
        k, v = self.kv(x).view(B, T, 2, self.h, self.hd).unbind(2)  # (B, T, H, hd) each
        if self.k_norm is not None:
            k = self.k_norm(k)
        return k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, hd)

    def forward(self, x: Tensor, mask: Tensor, kv: tuple[Tensor, Tensor] | None = None,
                queries: int | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x: (B, T, d); mask: (B, 1 or H, T, Tk) bool, True = may attend; kv: precomputed keys/values.

        `queries`: only the last `queries` positions of x query (the output is theirs); the keys and
        values still come from every position.
        """
        if kv is None and self.kv is None:
            raise ValueError("this attention shares another stack's keys and values: pass kv")
        k, v = self.keys_values(x) if kv is None else kv
        if queries is not None:
            x, mask = x[:, -queries:], mask[..., -queries:, :]
        B, Tq, d = x.shape
        q = self.q(x).view(B, Tq, self.h, self.hd)
        if self.q_norm is not None:
            q = self.q_norm(q)
        q = q.transpose(1, 2)  # (B, H, Tq, hd)
        if self.track_logits:
            with torch.no_grad():
                logits = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
                self.max_logit = float(logits.masked_fill(~mask, float("-inf")).max())
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, Tq, hd)
        y = y.transpose(1, 2).reshape(B, Tq, d)
        if self.gate is not None:
            y = y * torch.sigmoid(self.gate(x))  # O = (MHA ⊙ σ(X W_θ)) W_O
        return self.o(y), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: GeneratorConfig, shared_kv: bool = False) -> None:
        super().__init__()
        self.n1, self.n2 = nn.RMSNorm(cfg.d_model), nn.RMSNorm(cfg.d_model)
        self.attn = GatedAttention(cfg, shared_kv)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model), nn.GELU(),
                                 nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor, kv: tuple[Tensor, Tensor] | None = None,
                queries: int | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Pre-norm attention and MLP; with `queries`, the output is only the last `queries` positions'."""
        a, kv_out = self.attn(self.n1(x), mask, kv, queries)
        x = x + self.drop(a) if queries is None else x[:, -queries:] + self.drop(a)
        return x + self.drop(self.mlp(self.n2(x))), kv_out


class Encoding(NamedTuple):
    """An MTP generator's encoding of histories: [BOS]'s hidden state (B, 1, d), the last layer's
    keys and values (each (B, H, T+1, hd)) and the validity of the tokens (B, T+1)."""

    h: Tensor
    kv: tuple[Tensor, Tensor]
    valid: Tensor


class OneLiveGenerator(nn.Module):
    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._fold_cache: dict[str, tuple[tuple, Tensor]] = {}
        d, K, L = cfg.d_model, cfg.codebook_size, cfg.levels
        self.code_emb = nn.ModuleList([nn.Embedding(K, d) for _ in range(L)])  # history SIDs, level by level
        self.kind_emb = nn.Embedding(cfg.n_kinds, d)
        self.watch_emb = nn.Embedding(cfg.watch_buckets, d)
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(N_TIME_FEATURES, d), nn.GELU(), nn.Linear(d, d)) if cfg.time_features else None
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.norm = nn.RMSNorm(d)
        self.heads = nn.ModuleList([nn.Linear(d, K, bias=False) for _ in range(L)])
        self.prev_emb = nn.ModuleList([nn.Embedding(K, d) for _ in range(L - 1)])  # chosen code of level l
        if cfg.code_dim:
            self.register_buffer("code_vectors", torch.zeros(L, K, cfg.code_dim))  # set_code_vectors() fills it
            self.code_in = nn.ModuleList([nn.Linear(cfg.code_dim, d, bias=False) for _ in range(L)])
            self.code_out = nn.ModuleList([nn.Linear(d, cfg.code_dim, bias=False) for _ in range(L)])
        if cfg.room_signals:
            # with semantic codes the prior also reads the content affinity of history and candidate
            self.room_prior = nn.Sequential(nn.Linear(cfg.room_signals + bool(cfg.code_dim), 32), nn.GELU(),
                                            nn.Linear(32, 1))
            # log of the weight of each level's log-probability in a room's score (L,): the refit weighs
            # the topic, the content codes and the streamer digits apart, as the prior overlaps them apart
            self.log_lp_scale = nn.Parameter(torch.zeros(L))
        if cfg.decode == "mtp":
            self.mtp_in = nn.ModuleList([nn.Linear(2 * d, d, bias=False) for _ in range(L - 1)])
            self.mtp_norm = nn.ModuleList([nn.RMSNorm(d) for _ in range(L - 1)])
            self.mtp = nn.ModuleList([Block(cfg, shared_kv=True) for _ in range(L - 1)])
        for m in self.modules():  # small embeddings, as GPT-2 does: a history token sums five of them,
            if isinstance(m, nn.Embedding):  # which at N(0, 1) would dwarf [BOS] (std 0.02) and the time MLP
                nn.init.normal_(m.weight, std=0.02)

    @property
    def device(self) -> torch.device:
        """Where the weights are: inputs (histories, candidates, signals) are moved here."""
        return self.bos.device

    def set_code_vectors(self, centroids: Tensor) -> None:
        """Load the tokenizer's codebook centroids (L, K, code_dim), e.g. `ResidualQuantizer.centroids`."""
        shape = (self.cfg.levels, self.cfg.codebook_size, self.cfg.code_dim)
        if not self.cfg.code_dim or tuple(centroids.shape) != shape:
            raise ValueError(f"code vectors of shape {tuple(centroids.shape)}, the generator expects {shape}")
        self.code_vectors.copy_(torch.as_tensor(centroids, dtype=torch.float32, device=self.device))

    def _folded(self, name: str, sources: tuple[Tensor, ...], make: Callable[[], Tensor]) -> Tensor:
        """A product of weights that inference reads instead of recomputing it per call, remade when
        one of `sources` changed (a new tensor, or an in-place update: training, a refit, loading)."""
        key = tuple((id(t), t.data_ptr(), t.device, t._version) for t in sources)
        hit = self._fold_cache.get(name)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                hit = (key, make())
            self._fold_cache[name] = hit
        return hit[1]

    def _inference(self) -> bool:
        """No gradient is asked for: the folded weights serve (training reads the weights themselves)."""
        return not torch.is_grad_enabled() and bool(self.cfg.code_dim)

    def code_embed(self, level: int, codes: Tensor) -> Tensor:
        """Input embedding of codes (any shape) of a level (0-based): free part + projected centroid."""
        if self._inference():
            return F.embedding(codes, self._folded(f"emb{level}", (self.code_emb[level].weight, self.code_in[level].weight,
                                                                   self.code_vectors),
                                                   lambda: self.code_emb[level].weight + self.code_in[level](self.code_vectors[level])))
        x = self.code_emb[level](codes)
        if self.cfg.code_dim:
            x = x + self.code_in[level](self.code_vectors[level][codes])
        return x

    def level_logits(self, level: int, h: Tensor) -> Tensor:
        """(..., K) logits of a level (0-based) from hidden states h (..., d); in inference one matrix
        product, the head and the centroids' projection folded into one (K, d) weight."""
        if self._inference():
            return F.linear(h, self._folded(f"head{level}", (self.heads[level].weight, self.code_out[level].weight,
                                                             self.code_vectors),
                                            lambda: self.heads[level].weight + self.code_vectors[level] @ self.code_out[level].weight))
        logits = self.heads[level](h)
        if self.cfg.code_dim:
            logits = logits + self.code_out[level](h) @ self.code_vectors[level].T
        return logits

    def affinity(self, hist: History, cand: Tensor) -> Tensor:
        """Content affinity (B, C): cosine between the mean of the history's SID vectors and each
        candidate's (a SID's vector: the sum of its codes' centroids, the tokenizer's reconstruction)."""
        hist, cand = hist.to(self.device), cand.to(self.device)

        def vec(codes: Tensor) -> Tensor:
            return sum(self.code_vectors[lv][codes[..., lv]] for lv in range(self.cfg.levels))

        h = (vec(hist.codes) * hist.valid[..., None]).sum(1) / hist.valid.sum(1).clamp(min=1)[:, None]  # (B, D)
        return (F.normalize(vec(cand), dim=-1) @ F.normalize(h, dim=-1)[:, :, None])[..., 0]

    def prior(self, signals: Tensor, affinity: Tensor | None = None) -> Tensor:
        """Live-room prior: a log-score (...) from each room's identity signals (..., S) and, with
        semantic codes, its content affinity (...); zeros without a prior."""
        if not self.cfg.room_signals:
            return torch.zeros(signals.shape[:-1], device=self.device)
        signals = signals.to(self.device)
        if signals.shape[-1] != self.cfg.room_signals:
            raise ValueError(f"{signals.shape[-1]} room signals, the generator's prior reads {self.cfg.room_signals}")
        if self.cfg.code_dim:
            if affinity is None:
                raise ValueError("a prior with semantic codes reads the content affinity too")
            signals = torch.cat([signals, affinity[..., None]], dim=-1)
        return self.room_prior(signals).squeeze(-1)

    def lp_weight(self) -> Tensor:
        """The weight (L,) of each level's log-probability in a room's score: exp(log_lp_scale) within
        LOG_LP_WEIGHT_RANGE (ones without a prior). Outside the range the gradient is zero, so an
        optimiser stops there."""
        if not self.cfg.room_signals:
            return torch.ones(self.cfg.levels, device=self.device)
        return self.log_lp_scale.clamp(*LOG_LP_WEIGHT_RANGE).exp()

    def room_scores(self, hist: History, cand: Tensor, signals: Tensor, enc: Encoding | None = None) -> Tensor:
        """Score of live rooms (B, C): Σ_l lp_weight()_l x log P(level l of their SID cand (B, C, L) | the
        levels before) + the prior of their signals (B, C, S); without a prior, log P(SID). `enc`: see `encode`."""
        if not self.cfg.room_signals:
            return self.sid_log_prob(hist, cand, enc)
        lp = self.sid_level_log_probs(hist, cand, enc)
        return (lp * self.lp_weight()).sum(-1) + self.live_prior(hist, cand, signals)

    def live_prior(self, hist: History, cand: Tensor, signals: Tensor) -> Tensor:
        """The prior (B, C) of candidates cand (B, C, L) with signals (B, C, S) after each history."""
        return self.prior(signals, self.affinity(hist, cand) if self.cfg.code_dim else None)

    # ------------------------------------------------------------------------------ encoding

    def _watch_bucket(self, watch: Tensor) -> Tensor:
        return torch.clamp(torch.floor(torch.log2(1.0 + watch.clamp(min=0))), 0, self.cfg.watch_buckets - 1).long()

    def embed(self, hist: History) -> tuple[Tensor, Tensor]:
        """Token embeddings [history..., BOS]: (B, T+1, d) and the validity mask (B, T+1)."""
        hist = hist.to(self.device)
        x = sum(self.code_embed(lv, hist.codes[..., lv]) for lv in range(self.cfg.levels))  # (B, T, d)
        x = x + self.kind_emb(hist.kind) + self.watch_emb(self._watch_bucket(hist.watch))
        B = x.shape[0]
        bos = self.bos.expand(B, 1, -1)  # (B, 1, d)
        if self.time_mlp is not None:
            x = x + self.time_mlp(time_features(hist.time, hist.now[:, None]))
            bos = bos + self.time_mlp(time_features(hist.now, hist.now))[:, None, :]
        x = torch.where(hist.valid[..., None], x, torch.zeros_like(x))
        valid = torch.cat([hist.valid, torch.ones(B, 1, dtype=torch.bool, device=x.device)], dim=1)
        return torch.cat([x, bos], dim=1), valid

    @staticmethod
    def causal_mask(valid: Tensor) -> Tensor:
        """(B, 1, T, T) bool: position i may attend to j <= i when j is not padding (and always to itself)."""
        T = valid.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=valid.device).tril()
        m = causal[None] & valid[:, None, :]
        return (m | torch.eye(T, dtype=torch.bool, device=valid.device)[None])[:, None]

    def main(self, x: Tensor, valid: Tensor, last: int | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Full stack over the tokens; returns the normalised hidden states and the last layer's KV.

        `last`: return only the last `last` positions' hidden states. The last layer then computes
        only those (its keys and values still cover every token), which is all that prediction
        needs: the same numbers for those positions at about 1 / n_layers less work.
        """
        mask = self.causal_mask(valid)
        kv = None
        for i, block in enumerate(self.blocks):
            x, kv = block(x, mask, None, last if i == len(self.blocks) - 1 else None)
        return self.norm(x), kv

    # --------------------------------------------------------------------------- prediction

    def mtp_step(self, level: int, h_prev: Tensor, code_prev: Tensor, kv: tuple[Tensor, Tensor], valid: Tensor) -> Tensor:
        """Hidden states of level `level` (1-based >= 2) from the previous level's, over the shared KV.

        h_prev (N, d) with code_prev (N,): one continuation per history; or h_prev (B, C, d) with
        code_prev (B, C): C continuations of each of B histories, read as C queries of one sequence.
        """
        i = level - 2
        u = self.mtp_in[i](torch.cat([self.mtp_norm[i](h_prev), self.prev_emb[i](code_prev)], dim=-1))
        flat = u.dim() == 2
        mask = valid[:, None, None, :]  # (N, 1, 1, T+1): attend to every real token and BOS
        u, _ = self.mtp[i](u[:, None, :] if flat else u, mask, kv)
        u = self.norm(u)
        return u[:, 0] if flat else u

    def encode(self, hist: History) -> Encoding:
        """MTP: the main stack's output for histories, which `forward`, `sid_log_prob` and
        `room_scores` can share (the joint room loss reads it twice per batch)."""
        if self.cfg.decode != "mtp":
            raise ValueError("only an MTP generator encodes a history once for every continuation")
        x, valid = self.embed(hist)
        h, kv = self.main(x, valid, last=1)
        return Encoding(h, kv, valid)

    def forward(self, hist: History, target: Tensor, enc: Encoding | None = None) -> list[Tensor]:
        """Teacher-forced logits of each level for the target SIDs: L tensors (B, K). target: (B, L).
        `enc`: the histories' `encode`, when the caller has it (MTP)."""
        target = target.to(self.device)
        if self.cfg.decode == "ar":
            x, valid = self.embed(hist)
            steps = [self.prev_emb[lv](target[:, lv]) for lv in range(self.cfg.levels - 1)]
            x = torch.cat([x, *(s[:, None, :] for s in steps)], dim=1)
            valid = torch.cat([valid, torch.ones(x.shape[0], len(steps), dtype=torch.bool, device=x.device)], dim=1)
            h, _ = self.main(x, valid, last=self.cfg.levels)  # [BOS] and the L-1 appended codes
            return [self.level_logits(lv, h[:, lv]) for lv in range(self.cfg.levels)]
        h, kv, valid = enc if enc is not None else self.encode(hist)
        h_l = h[:, -1]  # [BOS]
        logits = [self.level_logits(0, h_l)]
        for level in range(2, self.cfg.levels + 1):
            h_l = self.mtp_step(level, h_l, target[:, level - 2], kv, valid)
            logits.append(self.level_logits(level - 1, h_l))
        return logits

    def weighted_loss(self, logits: list[Tensor], target: Tensor, allowed: Tensor | None = None) -> tuple[Tensor, list[float]]:
        """L = Σ_l w_l CE(level l) / Σ_l w_l for logits from `forward`; also each level's CE.

        `allowed` (B, L, K) bool restricts each level's softmax to the codes that continue the
        target's prefix among the rooms live at the target's time (the constrained decoder's
        choice set); it must allow every target code.
        """
        target = target.to(self.device)
        if allowed is not None:
            allowed = allowed.to(self.device)
            logits = [lg.masked_fill(~allowed[:, lv], float("-inf")) for lv, lg in enumerate(logits)]
        ces = [F.cross_entropy(lg, target[:, lv]) for lv, lg in enumerate(logits)]
        w = self.cfg.level_weights
        return sum(wl * ce for wl, ce in zip(w, ces)) / sum(w), [c.item() for c in ces]

    def loss(self, hist: History, target: Tensor) -> tuple[Tensor, list[float]]:
        return self.weighted_loss(self.forward(hist, target), target)

    def sid_log_prob(self, hist: History, cand: Tensor, enc: Encoding | None = None) -> Tensor:
        """log P(SID) of candidate SIDs cand (B, C, L) after each history: (B, C)."""
        return self.sid_level_log_probs(hist, cand, enc).sum(-1)

    def sid_level_log_probs(self, hist: History, cand: Tensor, enc: Encoding | None = None) -> Tensor:
        """log P(level l of each candidate SID | its levels before l) for cand (B, C, L): (B, C, L).

        MTP runs the main stack once per history (or reads `enc`, its `encode`) and only the light
        modules per candidate; AR runs the full stack per (history, candidate) pair.
        """
        B, C, L = cand.shape
        cand = cand.to(self.device)
        if self.cfg.decode == "ar":
            rep = History(*(t.repeat_interleave(C, dim=0) for t in (hist.codes, hist.kind, hist.watch, hist.time,
                                                                    hist.valid, hist.now)))
            logits = [lg.view(B, C, -1) for lg in self.forward(rep, cand.reshape(B * C, L))]
            return torch.stack([torch.log_softmax(lg, -1).gather(-1, cand[..., lv:lv + 1])[..., 0]
                                for lv, lg in enumerate(logits)], -1)
        h, kv, valid = enc if enc is not None else self.encode(hist)  # h (B, 1, d): [BOS]
        lps = [torch.log_softmax(self.level_logits(0, h[:, 0]), -1).gather(-1, cand[..., 0])]  # level 1: once per history
        h_l = h.expand(B, C, -1)  # (B, C, d): [BOS] for every candidate
        for level in range(2, L + 1):
            h_l = self.mtp_step(level, h_l, cand[..., level - 2], kv, valid)
            lps.append(torch.log_softmax(self.level_logits(level - 1, h_l), -1).gather(-1, cand[..., level - 1:level])[..., 0])
        return torch.stack(lps, -1)
