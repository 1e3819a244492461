"""int8 weights for the host on CPU: weight-only, per output channel, activations kept in bfloat16.

Decoding reads every weight once per token, so it is memory-bound: int8 weights read a quarter of
fp32's bytes. Of the two ways, torch's dynamic quantisation (`quantize_dynamic`, int8 weights *and*
activations quantised per tensor on the fly) loses correctness against fp32, because one scale per
tensor flattens a row's small values; weight-only int8 keeps the activations in bfloat16 and multiplies with `torch._weight_int8pack_mm` (the int8
weight-only kernel gpt-fast uses), at the same decoding speed. Each `nn.Linear` becomes an
`Int8Linear`: `w ≈ scale[o] * q[o, i]`, `q` in [-127, 127], `scale = max|w[o, :]| / 127`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Int8Linear(nn.Module):
    """`nn.Linear` with int8 weights, one bfloat16 scale per output channel; float in, float out."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()  # (O, I)
        scale = w.abs().amax(1).clamp(min=1e-8) / 127  # (O,)
        self.register_buffer("weight_int8", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape  # (..., I)
        y = torch._weight_int8pack_mm(x.reshape(-1, shape[-1]).to(torch.bfloat16), self.weight_int8, self.scale)
        y = y.to(x.dtype).reshape(*shape[:-1], self.out_features)  # (..., O)
        return y if self.bias is None else y + self.bias

    def dequantized(self) -> torch.Tensor:
        """The weight the layer multiplies by, in float: (O, I)."""
        return self.weight_int8.float() * self.scale.float()[:, None]


def quantize_int8(module: Any) -> Any:
    """Every nn.Linear of `module` (in place) as an `Int8Linear`; the model is returned in eval mode.
    Quantised tokens differ from fp32 ones: judge the answers, not the tokens."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child))
    return module.eval()


def weight_bytes(module: Any) -> int:
    """Bytes of the weights a decoding step reads: parameters and int8 buffers (an embedding table
    not tied to a Linear is only looked up, one row a token, and is left out)."""
    looked_up = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    tied = {id(m.weight) for m in module.modules() if isinstance(m, nn.Linear)}
    total = sum(p.numel() * p.element_size() for p in module.parameters() if id(p) not in looked_up or id(p) in tied)
    for m in module.modules():
        if isinstance(m, Int8Linear):
            total += sum(b.numel() * b.element_size() for b in (m.weight_int8, m.scale, m.bias) if b is not None)
    return total
