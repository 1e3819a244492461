"""The host's decoder as a generation backend of `think eval`: the answers the service would stream,
scored offline (the same decoder, prefix cache and weights)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from livemind.serve.host.decoder import BatchDecoder, Generation
from livemind.serve.host.int8 import SMOOTH_ALPHA, quantize_for_host


class DecoderBackend:
    """`BatchDecoder` as a `livemind.think.backends.Backend`: `think eval` scores the answers the
    service streams (the same decoder, prefix cache and weights), submitted together so they batch."""

    def __init__(self, model: str, tokenizer: Any, module: Any, params: int, device: str = "cpu", max_batch: int = 16,
                 progress: Any = None) -> None:
        self.model, self.tok, self.params, self.progress = model, tokenizer, params, progress
        self.decoder = BatchDecoder(tokenizer, module, device, max_batch=max_batch, max_wait_s=1e9)
        self.lm = self.decoder.lm

    def generate(self, prompts: Sequence[Sequence[dict[str, str]]], sampling: Any) -> list[list[Any]]:
        from livemind.think.backends import Completion

        gens = [[Generation() for _ in range(sampling.n)] for _ in prompts]
        reqs = [[self.decoder.submit(m, sampling.max_tokens, sampling.temperature, sampling.top_p,
                                     None if sampling.seed is None else sampling.seed + i, sampling.stop, g,
                                     repeats=sampling.stop_repeats)
                 for i, g in enumerate(row)] for m, row in zip(prompts, gens)]
        out = []
        for j, row in enumerate(reqs):
            for r in row:
                "".join(self.decoder.pieces(r))
            out.append([Completion(g.text, g.completion_tokens, g.seconds) for g in gens[j]])
            if self.progress is not None and (j + 1) % 50 == 0:
                self.progress(j + 1, len(prompts))
        return out

    def close(self) -> None:
        self.decoder.close()


def engine_backends(device: str = "cpu", float_cache: str | None = "runs/cache/models",
                    smooth: float = SMOOTH_ALPHA) -> dict[str, Any]:
    """`think eval`'s serving engines: "served" (fp32) and "served-int8" (`livemind serve
    --host-weights int8`: smoothed with alpha `smooth`, 0 for none), each the service's own decoder
    over the spec's model."""
    from livemind.think.backends import load_causal_lm
    from livemind.think.evaluate import active_parameters

    def build(int8: bool) -> Any:
        def make(spec: Any, batch_size: int, progress: Any) -> DecoderBackend:
            tok, lm = load_causal_lm(spec.model, spec.gguf_file, float_cache)
            params = active_parameters(lm)
            if int8:
                lm = quantize_for_host(lm, tok, smooth)
            return DecoderBackend(f"{spec.model}@{spec.engine}", tok, lm, params, device,
                                  batch_size, progress)
        return make

    return {"served": build(False), "served-int8": build(True)}
