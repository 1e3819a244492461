"""The host decoder's model runners: one forward that writes its keys and values into the
decoder's own KV buffers, over a Llama student's fused weights or over any transformers model.

Why a runner of our own: at batch 1 a decoding step of transformers' Llama spends most of its time
outside the matrix products — dozens of small ops a layer and the whole KV cache concatenated at
every step. `FastLlama` runs the same arithmetic with the
projections fused (q|k|v and gate|up: 4 products a layer instead of 7), rotary tables computed
once by the model's own rotary module, grouped-query attention by `scaled_dot_product_attention` (keys not repeated), and
keys and values written in place into preallocated buffers. Its logits equal transformers' (the
tests compare them and the greedy tokens).

Int8 weights (`livemind.serve.host.int8`): decoding (a few rows) multiplies them with
`torch._weight_int8pack_mm` (reads int8, activations in bfloat16: memory-bound); a prefill (many
rows, compute-bound) multiplies the same int8 values, kept once as a bfloat16 copy, on the bfloat16
GEMM. Activations stay in bfloat16 on both paths: quantising them to int8 as well (one scale per
token, on the int8 GEMM: faster on short prompts) cost the RFT student 13 points of validation answers
(90.8% -> 77.5%; weight-only 89.2%), because the normed inputs of the q|k|v and gate|up products
carry a few channels far larger than the rest (docs/results.md, "int8 served").

`HFRunner` is the same interface over any causal LM of transformers (the MoE student, other
architectures): its cache is built from views of the buffers and the new keys copied back.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from livemind.serve.host.int8 import Int8Linear

GEMM_ROWS = 64  # from this many rows on (a prefill), int8 weights multiply as a bfloat16 copy on the GEMM;
# a decoding batch (16 rows, 48 with speculative drafts) reads the int8 weights themselves
ATTN_CHUNK = 64  # a prefill attends in blocks of this many queries, each over only the keys it may see


@dataclass(frozen=True)
class KVShape:
    """What a runner's key/value buffers look like: (layers, kv heads, head dim) and dtype."""

    layers: int
    heads: int
    dim: int
    dtype: torch.dtype


class _Fused:
    """Several projections of the same input as one product: float weights, or int8 weights with
    one scale per output channel (see the module docstring for how many rows multiply them)."""

    def __init__(self, parts: list[nn.Module]) -> None:
        if all(isinstance(p, Int8Linear) for p in parts):
            self.q = torch.cat([p.weight_int8 for p in parts])  # (O, I) int8
            self.scale = torch.cat([p.scale for p in parts])  # (O,) bfloat16
            self.wide: torch.Tensor | None = None  # the int8 values in bfloat16, made at the first prefill
            self.w = None
        elif all(type(p) is nn.Linear for p in parts):
            self.w = torch.cat([p.weight.detach() for p in parts])  # (O, I)
            self.q = None
        else:
            raise TypeError(f"fused projections must all be nn.Linear or all Int8Linear, got {[type(p).__name__ for p in parts]}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(M, I) -> (M, O) in x's dtype."""
        if self.q is None:
            return F.linear(x.to(self.w.dtype), self.w).to(x.dtype)
        if x.shape[0] >= GEMM_ROWS:
            if self.wide is None:
                self.wide = self.q.to(torch.bfloat16)  # exact: integers in [-127, 127]
            return F.linear(x.to(torch.bfloat16), self.wide).mul_(self.scale).to(x.dtype)
        return torch._weight_int8pack_mm(x.to(torch.bfloat16), self.q, self.scale).to(x.dtype)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm in one op (in float32, as transformers computes it for float32 weights)."""
    return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps).to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, start: int,
            scale: float) -> torch.Tensor:
    """Grouped-query attention of q (B, H, S, D) over k, v (B, Hkv, start + S, D) where `allowed`
    (B, 1, S or 1, start + S) is set. A long prefill goes in blocks of `ATTN_CHUNK` queries, each over
    the keys up to its last query (the later ones are causally masked anyway): the same result
    with less work than one masked pass over every key."""
    S = q.shape[2]
    if S <= ATTN_CHUNK:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale, enable_gqa=True)
    blocks = []
    for i in range(0, S, ATTN_CHUNK):
        end = start + min(S, i + ATTN_CHUNK)
        blocks.append(F.scaled_dot_product_attention(q[:, :, i:i + ATTN_CHUNK], k[:, :, :end], v[:, :, :end],
                                                     attn_mask=allowed[:, :, i:i + ATTN_CHUNK, :end], scale=scale,
                                                     enable_gqa=True))
    return torch.cat(blocks, 2)


class FastLlama:
    """A Llama-family causal LM (SmolLM2's architecture) run over fused weights (see the module
    docstring). Build it from the transformers module, quantised or not: `FastLlama.fits(module)`
    says whether it can."""

    @staticmethod
    def fits(module: Any) -> bool:
        cfg = getattr(module, "config", None)
        if cfg is None or getattr(cfg, "model_type", None) != "llama":
            return False
        rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default")
        linears = [m for m in module.modules() if hasattr(m, "in_features")]
        return (not getattr(cfg, "attention_bias", False) and not getattr(cfg, "mlp_bias", False)
                and getattr(cfg, "hidden_act", None) == "silu" and rope in ("default", "linear", "llama3")
                and all(type(m) in (nn.Linear, Int8Linear) for m in linears))  # not torch's dynamic int8

    def __init__(self, module: Any) -> None:
        if not self.fits(module):
            raise TypeError(f"FastLlama runs Llama models without biases, got {type(module).__name__}")
        cfg, inner = module.config, module.model
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.scaling = self.dim ** -0.5
        self.embed = inner.embed_tokens.weight.detach()
        self.dtype, self.device = self.embed.dtype, self.embed.device
        self.layers = [(layer.input_layernorm.weight.detach(),
                        _Fused([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]),
                        _Fused([layer.self_attn.o_proj]),
                        layer.post_attention_layernorm.weight.detach(),
                        _Fused([layer.mlp.gate_proj, layer.mlp.up_proj]),
                        _Fused([layer.mlp.down_proj])) for layer in inner.layers]
        self.norm = inner.norm.weight.detach()
        self.head = _Fused([module.lm_head])
        with torch.inference_mode():  # the model's own rotary tables, once, for every position
            positions = torch.arange(cfg.max_position_embeddings, device=self.device)[None]
            cos, sin = inner.rotary_emb(self.embed[:1], positions)
        self.cos, self.sin = cos[0].to(self.dtype), sin[0].to(self.dtype)  # (P, D)
        self.kv = KVShape(len(self.layers), self.kv_heads, self.dim, self.dtype)

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int,
                mask: torch.Tensor, every: bool = False) -> torch.Tensor:
        """Run `ids` (B, S) at positions `pos` (B, S) after `start` cached columns: their keys and
        values are written into `keys`/`values` (L, B, Hkv, >= start + S, D) at [start, start + S);
        attention reads columns [0, start + S) where `mask` (B, start + S, bool) is set, causally
        among the new ones. Returns the last position's logits (B, V) in float32, or every
        position's (B, S, V) with `every` (a speculative step checks its drafts with them)."""
        B, S = ids.shape
        T, H, D = start + S, self.heads, self.dim
        x = F.embedding(ids, self.embed)  # (B, S, E)
        cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]  # (B, 1, S, D)
        allowed = mask[:, None, None, :]  # (B, 1, 1, T): the columns each row attends to
        if S > 1:  # and causally among the new tokens: (B, 1, S, T)
            allowed = allowed & (torch.arange(T, device=ids.device) <= start + torch.arange(S, device=ids.device)[:, None])
        q_size, kv_size = H * D, self.kv_heads * D
        for i, (ln1, qkv, o_proj, ln2, gate_up, down) in enumerate(self.layers):
            h = qkv(_rms(x, ln1, self.eps).view(B * S, -1)).view(B, S, -1)
            qk = _rotate(h[..., :q_size + kv_size].view(B, S, H + self.kv_heads, D).transpose(1, 2), cos, sin)
            keys[i, :, :, start:T] = qk[:, H:]  # (B, Hkv, S, D)
            values[i, :, :, start:T] = h[..., q_size + kv_size:].view(B, S, self.kv_heads, D).transpose(1, 2)
            att = _attend(qk[:, :H], keys[i, :, :, :T], values[i, :, :, :T], allowed, start, self.scaling)  # (B, H, S, D)
            att = att.transpose(1, 2).reshape(B * S, H * D)  # (B*S, H*D)
            x = x + o_proj(att).view(B, S, -1)
            g, u = gate_up(_rms(x, ln2, self.eps).view(B * S, -1)).chunk(2, -1)
            x = x + down(F.silu(g) * u).view(B, S, -1)
        if every:
            return self.head(_rms(x, self.norm, self.eps).view(B * S, -1)).float().view(B, S, -1)  # (B, S, V)
        return self.head(_rms(x[:, -1], self.norm, self.eps)).float()  # (B, V)


class HFRunner:
    """The same forward over any transformers causal LM (its own KV cache, built from views of the
    buffers; the new keys and values copied back)."""

    def __init__(self, module: Any) -> None:
        self.lm, cfg = module, module.config
        # transformers 5 renames the KV-cache argument of forward from past_key_values to cache
        self._cache_arg = "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"
        dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        dtype = next(module.parameters()).dtype
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.kv = KVShape(cfg.num_hidden_layers, heads, dim, dtype)

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int,
                mask: torch.Tensor, every: bool = False) -> torch.Tensor:
        from transformers import DynamicCache

        S = ids.shape[1]  # every: (B, S, V), each position's logits; else the last one's (B, V)
        kw: dict[str, Any] = {}
        if start:
            kw[self._cache_arg] = DynamicCache(ddp_cache_data=[(keys[i, :, :, :start], values[i, :, :, :start])
                                                               for i in range(self.kv.layers)])
        out = self.lm(input_ids=ids, position_ids=pos, attention_mask=mask.long(), use_cache=True, **kw)
        for i, layer in enumerate(out.past_key_values.layers):
            keys[i, :, :, start:start + S] = layer.keys[:, :, -S:]
            values[i, :, :, start:start + S] = layer.values[:, :, -S:]
        return out.logits.float() if every else out.logits[:, -1].float()


def runner_for(module: Any) -> FastLlama | HFRunner:
    """`FastLlama` for the Llama students, `HFRunner` for the rest (the MoE student)."""
    return FastLlama(module) if FastLlama.fits(module) else HFRunner(module)
