"""int8 weights for the host on CPU: weight-only, per output channel, activations kept in bfloat16.

Decoding reads every weight once per token, so it is memory-bound: int8 weights read a quarter of
fp32's bytes. Of the two ways, torch's dynamic quantisation (`quantize_dynamic`, int8 weights *and*
activations quantised per tensor on the fly) loses correctness against fp32, because one scale per
tensor flattens a row's small values; weight-only int8 keeps the activations in bfloat16 and multiplies with `torch._weight_int8pack_mm` (the int8
weight-only kernel gpt-fast uses), at the same decoding speed. Each `nn.Linear` becomes an
`Int8Linear`: `w ≈ scale[o] * q[o, i]`, `q` in [-127, 127], `scale = max|w[o, :]| / 127`.

Before rounding, `smooth` moves scale between the normed activations and the weights that read them
(SmoothQuant/AWQ-style, exact in float): each input channel j of the q|k|v and gate|up products is
multiplied by `s[j] = mean|x[j]|^alpha / max|w[:, j]|^(1 - alpha)` and the RMSNorm weight before them
divided by it, with |x| measured on `calibration_ids` (the host's own prompts and worked answers on a
fixed small catalog). Channels that carry large activations get finer weight steps. It narrowed the
served student's loss on 120 validation tasks from 2.5 to 1.7 points (one answer; docs/results.md,
"int8 served"), not enough on 500 test tasks: near-tied greedy tokens still flip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

SMOOTH_ALPHA = 0.5  # chosen on the validation split (docs/results.md, "int8 served"); 0 turns smoothing off
SMOOTH_BOUND = 1e3  # a channel's scale stays within [1/SMOOTH_BOUND, SMOOTH_BOUND]


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


def smoothing_groups(module: Any) -> list[tuple[nn.Module, list[nn.Linear]]]:
    """(RMSNorm, the Linears reading its output) of each decoder layer of a Llama-style model
    (`model.layers[i]` with input_layernorm -> self_attn.q|k|v_proj, post_attention_layernorm ->
    mlp.gate|up_proj); a group whose parts are missing or not plain Linears (an MoE's experts) is left out."""
    groups = []
    for layer in getattr(getattr(module, "model", None), "layers", None) or []:
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        for norm, owner, names in ((getattr(layer, "input_layernorm", None), attn, ("q_proj", "k_proj", "v_proj")),
                                   (getattr(layer, "post_attention_layernorm", None), mlp, ("gate_proj", "up_proj"))):
            parts = [getattr(owner, n, None) for n in names]
            if (isinstance(getattr(norm, "weight", None), torch.Tensor) and getattr(norm, "bias", None) is None
                    and all(type(x) is nn.Linear for x in parts)):
                groups.append((norm, parts))
    return groups


def smooth(module: Any, calibration: Sequence[torch.Tensor], alpha: float = SMOOTH_ALPHA) -> int:
    """Fold per-channel scales into each `smoothing_groups` pair (in place; the float model computes
    the same function): the Linears' input channels times s, the norm's weight divided by s, with
    s = mean|x|^alpha / max|w|^(1 - alpha) over the `calibration` token ids (each (L,) or (1, L)),
    bounded to [1/SMOOTH_BOUND, SMOOTH_BOUND]. Returns the number of groups smoothed."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothing alpha must be in [0, 1], got {alpha!r}")
    groups = smoothing_groups(module)
    if alpha == 0.0 or not groups or not calibration:
        return 0
    sums = [torch.zeros(g[1][0].in_features, dtype=torch.float64) for g in groups]
    rows = [0] * len(groups)

    def hook(i: int) -> Any:
        def record(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1])  # (tokens, I)
            sums[i] += x.abs().double().sum(0).cpu()
            rows[i] += x.shape[0]
        return record

    handles = [g[1][0].register_forward_pre_hook(hook(i)) for i, g in enumerate(groups)]
    try:
        device = next(module.parameters()).device
        with torch.inference_mode():
            for ids in calibration:
                module(input_ids=ids.reshape(1, -1).to(device))
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        for (norm, parts), total, n in zip(groups, sums, rows):
            act = (total / max(n, 1)).float().clamp(min=1e-6)  # (I,)
            w = torch.cat([p.weight.detach().abs().float().cpu() for p in parts]).amax(0).clamp(min=1e-6)  # (I,)
            s = (act ** alpha / w ** (1 - alpha)).clamp(1 / SMOOTH_BOUND, SMOOTH_BOUND)
            if not torch.isfinite(s).all():
                raise ValueError("smoothing scales are not finite: the calibration activations overflowed")
            norm.weight.div_(s.to(norm.weight))
            for p in parts:
                p.weight.mul_(s.to(p.weight)[None, :])
    return len(groups)


def calibration_ids(tokenizer: Any, n: int = 16) -> list[torch.Tensor]:
    """`n` of the host's conversations as token ids, each a prompt (system, card, question) and its
    worked answer, on a fixed small simulated catalog (not the served one: the same calibration
    wherever the student is served or evaluated)."""
    from livemind.think.prompts import messages, split_reasoning, target
    from livemind.think.tasks import make_tasks
    from livemind.world.simulator import LiveWorld, WorldConfig

    products = LiveWorld(WorldConfig(seed=5, n_viewers=10, n_streamers=6, days=0.1)).products
    out = []
    for task in make_tasks(products, n, 3, "calibration"):
        chat = messages(task) + [{"role": "assistant", "content": target(*split_reasoning(task.reference))}]
        text = tokenizer.apply_chat_template(chat, tokenize=False)
        out.append(tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0])
    return out


def quantize_for_host(module: Any, tokenizer: Any, alpha: float = SMOOTH_ALPHA) -> Any:
    """`quantize_int8` as the host serves it: smoothed with `alpha` over `calibration_ids(tokenizer)`
    (made only when alpha > 0)."""
    return quantize_int8(module, calibration_ids(tokenizer) if alpha else (), alpha)


def quantize_int8(module: Any, calibration: Sequence[torch.Tensor] = (), alpha: float = SMOOTH_ALPHA) -> Any:
    """Every nn.Linear of `module` (in place) as an `Int8Linear`, after `smooth` over `calibration`
    (token ids, e.g. `calibration_ids(tokenizer)`; none: no smoothing); returned in eval mode.
    Quantised tokens differ from fp32 ones: judge the answers, not the tokens."""
    smooth(module.eval(), calibration, alpha)
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
