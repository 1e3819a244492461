"""Prompt-lookup drafts for a viewer decoding alone (`livemind serve --host-speculate K`): how many
to check per step.

The served engine (livemind's forward, int8 weights, the service's decoder on every core, the main
thread on one) answers held-out test tasks one at a time, greedy, with the host's stop, for each
draft count K: decoding tokens/s after the first token, ms per forward pass, draft tokens kept /
checked, and how many answers equal those of K = 0 (a pass over several tokens rounds differently
from one token at a time). Each K runs `--repeats` times, alternating, since this machine's speed
moves between minutes.

Run: python benchmarks/host_drafts.py [--student runs/think_grpo/stage2/student] [--tasks 40]   (last line: JSON)
"""

from __future__ import annotations

import argparse
import json

from livemind.demo import demo_world_config
from livemind.serve.host.decoder import BatchDecoder, Generation
from livemind.serve.host.int8 import quantize_int8
from livemind.serve.host.threads import own_threads
from livemind.think.backends import load_causal_lm
from livemind.think.prompts import STOP, messages
from livemind.think.tasks import make_tasks
from livemind.world.simulator import LiveWorld


def run(tok, lm, chats: list, drafts: int, max_tokens: int) -> dict:
    dec = BatchDecoder(tok, lm, speculate=drafts)
    texts, decoding, tokens = [], 0.0, 0
    try:
        for chat in chats:
            gen = Generation()
            texts.append("".join(dec.stream(chat, max_tokens, stop=STOP, gen=gen, repeats=True)))
            decoding += gen.seconds - gen.first_token_s
            tokens += gen.completion_tokens - 1
    finally:
        dec.close()
    return {"tok_s": tokens / decoding, "ms_per_pass": 1000 * decoding / dec.steps, "accepted": dec.accepted,
            "drafted": dec.drafted, "texts": texts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default="runs/think_grpo/stage2/student")
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--drafts", default="0,1,2,3,4")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=96)
    args = ap.parse_args()
    own_threads(1)  # as `livemind serve` runs it: the decoder's thread takes every core, this one keeps one
    tok, lm = load_causal_lm(args.student)
    lm = quantize_int8(lm)
    chats = [messages(t) for t in make_tasks(LiveWorld(demo_world_config()).products, args.tasks, 1, "test")]
    counts = [int(k) for k in args.drafts.split(",")]
    runs: dict[int, list[dict]] = {k: [] for k in counts}
    for r in range(args.repeats):
        for k in counts:
            runs[k].append(run(tok, lm, chats, k, args.max_tokens))
            print(f"repeat {r + 1}, {k} drafts: {runs[k][-1]['tok_s']:.1f} tok/s", flush=True)
    plain = runs[counts[0]][0]["texts"]
    rows = {k: {"tok_s": [round(x["tok_s"], 1) for x in rs], "ms_per_pass": [round(x["ms_per_pass"], 2) for x in rs],
                "kept": rs[0]["accepted"], "checked": rs[0]["drafted"],
                "identical_to_first": sum(a == b for a, b in zip(rs[0]["texts"], plain))} for k, rs in runs.items()}
    print(f"\n{args.student}, int8, {len(chats)} test tasks one at a time, greedy; identical: to {counts[0]} drafts")
    print(f"{'drafts':>7} {'tokens/s':>16} {'ms a pass':>14} {'kept / checked':>16} {'identical':>10}")
    for k, row in rows.items():
        print(f"{k:>7} {' / '.join(map(str, row['tok_s'])):>16} {' / '.join(map(str, row['ms_per_pass'])):>14} "
              f"{row['kept']:>7} / {row['checked']:<6} {row['identical_to_first']:>10}")
    print(json.dumps({"student": args.student, "tasks": len(chats), "drafts": rows}))


if __name__ == "__main__":
    main()
