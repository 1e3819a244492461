"""The live recommendation service, measured over HTTP.

World, tokenizer and generator + live-room prior are benchmarks/rec_quality.py's (configs/world/rec.yaml,
its tokenizer and `gen-prior` under --bench, trained there if missing); the held-out part is the last
third of the world (its last day). The server is `livemind serve` in a subprocess, the client this
process, both on this machine.

1. parity: replay the world (events before the held-out day as fast as the service takes them, then
   the held-out day) and ask for recommendations just before each of the offline evaluation's held-out
   watches; `top10_parity` = share of requests whose served top-10 equals the offline `recommend` on the
   same (viewer, time); `online_hr10` vs `offline_hr10` (the offline `evaluate` on the same targets).
   `ingest_events_per_s`: events acknowledged per second over the warm-up, in batches of 500.
2. latency: a fresh server, warmed up to the held-out day, then the stream at 10x real time while an
   open-loop client sends /v1/recommend at fixed rates: p50/p99 at 100 requests/s, and the highest rate
   whose p99 <= 100 ms. A generator reload in the middle of the 100/s window counts failed requests.
   `sid_freshness_p99_ms`: from a segment batch's acknowledgement to the room's new SID in the live
   snapshot that /v1/recommend decodes over (read through /v1/rooms/live).
3. durability: replay again with kill -9 at three random points, restart, finish; `acked_lost` =
   acknowledged events missing from the log, `restart_top10_parity` = answers equal to run 1's.

Run: python benchmarks/serve_rec.py [--quick]   (last line: JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import torch
from common import bench_models, stage, stream_items

from livemind.rec.data.feedback import ViewerState
from livemind.rec.data.prepare import prepare
from livemind.rec.eval.offline import GeneratorRanker, evaluate, recommend_at
from livemind.rec.model.checkpoint import load_generator
from livemind.rec.model.prior import prior_signals
from livemind.rec.tokenizer.dynamic import DynamicTokenizer
from livemind.report import figure
from livemind.serve.process import ServiceProcess
from livemind.world.live_log import LiveLog

ROOT = Path(__file__).resolve().parent.parent






def server(tok: Path, gen: Path, store: Path, cache: Path) -> ServiceProcess:
    """`livemind serve` on the benchmark's models in its own process (restartable on its port)."""
    return ServiceProcess(["--tokenizer", tok, "--generator", gen, "--store", store, "--cache", cache])




def post_events(http: httpx.Client, events: list[dict]) -> int:
    r = http.post("/v1/events", content=orjson.dumps({"events": events}), headers={"content-type": "application/json"})
    if r.status_code != 200:
        raise RuntimeError(f"refused: {r.status_code} {r.text[:300]}")
    return r.json()["offset"]


def run_stream(http, items, targets: set, start_at: int = 0, stop_at: int | None = None, batch: int = 500,
               answers: dict | None = None, warm_until: float | None = None, rates: dict | None = None,
               progress: dict | None = None) -> int:
    """Send items[start_at:stop_at] in batches, asking before each target watch; returns the next index."""
    pending: list[dict] = []
    asked = set() if answers is None else set(answers)

    def send() -> None:
        if progress is not None:
            progress["sent"] = i
        offset = post_events(http, pending)
        if progress is not None:
            progress["acked"] = max(progress["acked"], offset)
        pending.clear()

    stop_at = len(items) if stop_at is None else stop_at
    t_warm = time.perf_counter()
    n_warm = 0
    i = start_at
    while i < stop_at:
        t, order, body, key = items[i]
        if key is not None and key in targets and key not in asked:
            if pending:
                send()
            asked.add(key)
            r = http.post("/v1/recommend", json={"viewer": key[0], "time": t, "k": 10})
            answers[key] = [x["room"] for x in r.json()["rooms"]]
        if warm_until is not None and t >= warm_until and rates is not None and "warm_s" not in rates:
            if pending:
                send()  # every warm-up event acknowledged: the warm-up's rate ends here
            rates["warm_events"], rates["warm_s"] = n_warm, time.perf_counter() - t_warm
        pending.append(body)
        if warm_until is not None and t < warm_until:
            n_warm += 1
        if len(pending) >= batch:
            send()
        i += 1
    if pending:
        send()
    if rates is not None and warm_until is not None and "warm_s" not in rates:
        rates["warm_events"], rates["warm_s"] = n_warm, time.perf_counter() - t_warm
    return i


async def open_loop(url: str, rate: float, seconds: float, viewers: np.ndarray, lat: list, fails: list) -> None:
    """Requests at `rate` per second for `seconds`, each on its own task (open loop)."""
    async with httpx.AsyncClient(base_url=url, timeout=10.0,
                                 limits=httpx.Limits(max_connections=256, max_keepalive_connections=256)) as c:
        rng = np.random.default_rng(int(rate))
        tasks = []
        t0 = time.perf_counter()
        n = int(rate * seconds)

        async def one(v: int) -> None:
            s = time.perf_counter()
            try:
                r = await c.post("/v1/recommend", json={"viewer": int(v), "k": 10})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            lat.append(1000 * (time.perf_counter() - s))
            if not ok:
                fails.append(1)

        for i in range(n):
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(rng.choice(viewers))))
        await asyncio.gather(*tasks)


def paced_stream(url: str, items, t_from: float, speed: float, stop, fresh) -> None:
    """The stream from t_from at `speed` x real time until `stop` (in its own process, so that it does not
    share the load generator's interpreter); per segment batch, (wall time, ack -> new segment seen ms)."""
    http = httpx.Client(base_url=url, timeout=30.0)
    i0 = next(i for i, x in enumerate(items) if x[0] >= t_from)
    wall0 = time.perf_counter()
    pending: list[dict] = []
    for t, _, body, _ in items[i0:]:
        if stop.is_set():
            break
        ahead = (t - t_from) / speed - (time.perf_counter() - wall0)
        if ahead > 0.02 and pending:
            segs = [b for b in pending if b["kind"] == "segment"]
            post_events(http, pending)
            acked = time.perf_counter()
            pending = []
            if segs:
                want = segs[-1]
                while True:  # the room's SID now follows its newest segment's product
                    live = {r["room"]: r for r in http.get("/v1/rooms/live").json()["rooms"]}
                    got = live.get(want["room"])
                    if got is None or got["segment"] >= want["index"]:
                        fresh.append((time.time(), 1000 * (time.perf_counter() - acked)))
                        break
        if ahead > 0.02:
            time.sleep(ahead)
        pending.append(body)


def latency_phase(srv: ServiceProcess, items, t_from: float, viewers: np.ndarray, rates: list[float], window: float,
                  gen_path: Path) -> dict:
    ctx = multiprocessing.get_context("fork")
    manager = ctx.Manager()
    stop, fresh = manager.Event(), manager.list()
    feeder = ctx.Process(target=paced_stream, args=(srv.url, items, t_from, 10.0, stop, fresh), daemon=True)
    feeder.start()
    time.sleep(2.0)  # the stream is flowing before the first window
    out: dict = {"by_rate": {}}
    windows = {}
    swap_fails: list = []
    for rate in rates:
        lat, fails = [], []
        swapper = None
        if rate == rates[0]:  # a model swap in the middle of the first window
            def swap() -> None:
                time.sleep(window / 2)
                r = httpx.post(srv.url + "/v1/admin/reload", json={"generator": str(gen_path)}, timeout=60)
                out["swap_status"] = r.status_code
            swapper = threading.Thread(target=swap)
            swapper.start()
        w0 = time.time()
        asyncio.run(open_loop(srv.url, rate, window, viewers, lat, fails))
        windows[rate] = (w0, time.time())
        if swapper:
            swapper.join()
            swap_fails = fails
        a = np.array(lat)
        out["by_rate"][rate] = {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
                                "n": len(a), "failed": len(fails), "lat": a}
        print(f"    {rate:6.0f} req/s: p50 {out['by_rate'][rate]['p50']:.1f} ms, p99 {out['by_rate'][rate]['p99']:.1f} ms, "
              f"{len(fails)} failed", flush=True)
        if out["by_rate"][rate]["p99"] > 100.0:  # past the highest rate held: higher ones only queue up
            break
    stop.set()
    feeder.join(timeout=30)
    w0, w1 = windows[rates[0]]
    out["fresh"] = [ms for at, ms in list(fresh) if w0 <= at <= w1]  # while 100 requests/s are served
    out["fresh_all"] = [ms for _, ms in list(fresh)]
    manager.shutdown()
    out["swap_failed"] = len(swap_fails)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer targets and shorter windows (under 10 minutes)")
    ap.add_argument("--bench", default="runs/bench_rec", help="benchmarks/rec_quality.py's output folder")
    ap.add_argument("--out", default="runs/bench_serve")
    ap.add_argument("--targets", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    bench, out = ROOT / args.bench, ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    n_targets = args.targets or (500 if args.quick else 1500)
    window = 8.0 if args.quick else 20.0
    world, split, tok_dir, gen_dir = bench_models(bench)
    tok = DynamicTokenizer.load(tok_dir, cache_dir=bench / "embeddings")
    data = prepare(world, tok, split, n_eval=n_targets, seed=0)
    model = load_generator(gen_dir, tok.version)
    signals = prior_signals(model.cfg, data.log, ViewerState.from_world(world), data.live)
    stage(f"world, tokenizer {tok.version}, generator + prior; {n_targets} held-out targets", t0)

    # offline: the evaluation's HR@10, and the offline recommend for every target (parity reference)
    rows = data.eval_rows
    offline_hr = evaluate(GeneratorRanker(model, data.live, model.cfg.max_history, signals=signals), data.log, rows)
    keys = [(int(data.log.viewer[r]), float(data.log.time[r])) for r in rows]
    offline_top = {}
    with torch.inference_mode():
        for v, t in keys:
            offline_top[(v, t)] = [r for r, _ in recommend_at(model, data.log, data.live, signals, v, t, 10, 32)]
    stage(f"offline: HR@10 {offline_hr['all']['hr@10']:.4f} on {len(rows)} targets", t0)

    items = stream_items(world, float(data.log.time.max()) + 1)
    targets = set(keys)
    gc.collect()
    gc.freeze()  # ~1M static stream items: the client's collections need not scan them again and again
    cache = bench / "embeddings"

    # 1. parity and ingest
    store1 = out / "run1.duckdb"
    store1.unlink(missing_ok=True)
    srv = server(tok_dir, gen_dir, store1, cache)
    srv.start()
    answers: dict = {}
    rates: dict = {}
    with httpx.Client(base_url=srv.url, timeout=120.0) as http:
        run_stream(http, items, targets, answers=answers, warm_until=split, rates=rates)
    srv.stop()
    parity = float(np.mean([answers[k] == offline_top[k] for k in keys]))
    # per held-out watch, as the offline evaluation counts (watches of one visit share a request)
    online_hr = float(np.mean([int(data.log.room[r]) in answers[k][:10] for r, k in zip(rows, keys)]))
    ingest = rates["warm_events"] / rates["warm_s"]
    stage(f"replayed {len(items):,} events: parity {parity:.4f}, online HR@10 {online_hr:.4f}, ingest {ingest:,.0f} events/s", t0)

    # 2. latency under a 10x stream
    store2 = out / "run2.duckdb"
    store2.unlink(missing_ok=True)
    srv = server(tok_dir, gen_dir, store2, cache)
    srv.start()
    with httpx.Client(base_url=srv.url, timeout=120.0) as http:
        i_split = next(i for i, x in enumerate(items) if x[0] >= split)
        run_stream(http, items, set(), stop_at=i_split)
    viewers = np.unique(data.log.viewer)
    rate_list = [100.0, 200.0, 300.0, 400.0] if args.quick else [100.0, 200.0, 300.0, 350.0, 400.0, 450.0, 500.0]
    lat = latency_phase(srv, items, split, viewers, rate_list, window, gen_dir)
    srv.stop()
    held = [r for r, m in lat["by_rate"].items() if m["p99"] <= 100.0]
    fresh = np.array(lat["fresh"]) if lat["fresh"] else np.array([np.nan])
    stage(f"latency at 100/s p50 {lat['by_rate'][100.0]['p50']:.1f} p99 {lat['by_rate'][100.0]['p99']:.1f} ms; "
          f"max rate with p99 <= 100 ms: {max(held) if held else 0:.0f}/s; freshness p99 {np.percentile(fresh, 99):.1f} ms", t0)

    # 3. kill -9 three times mid-replay: a watcher kills the server at random points of the stream
    store3 = out / "run3.duckdb"
    store3.unlink(missing_ok=True)
    srv = server(tok_dir, gen_dir, store3, cache)
    srv.start()
    answers3: dict = {}
    progress = {"sent": 0, "acked": 0}
    kill_at = sorted(np.random.default_rng(7).choice(np.arange(len(items) // 10, len(items)), 3, replace=False).tolist())
    killed = threading.Event()

    def killer() -> None:
        for at in kill_at:
            while progress["sent"] < at:
                time.sleep(0.005)
            time.sleep(float(np.random.default_rng(at).uniform(0, 0.05)))  # somewhere inside a request
            srv.kill9()
            killed.set()
            while killed.is_set():
                time.sleep(0.01)

    threading.Thread(target=killer, daemon=True).start()
    restart_s, i = [], 0
    while i < len(items):
        try:
            with httpx.Client(base_url=srv.url, timeout=120.0) as http:
                i = run_stream(http, items, targets, start_at=i, answers=answers3, progress=progress)
        except (httpx.TransportError, RuntimeError):
            killed.wait()
            restart_s.append(srv.start())
            killed.clear()
            i = httpx.get(srv.url + "/readyz").json()["events"]  # resume after the last event the log holds
    srv.stop()
    log = LiveLog(store3)
    offsets = log.offsets()
    log.close()
    in_log = set(offsets.tolist())
    acked_lost = sum(1 for o in range(1, progress["acked"] + 1) if o not in in_log)
    restart_parity = float(np.mean([answers3.get(k) == answers[k] for k in keys]))
    stage(f"{len(restart_s)} x kill -9: {progress['acked']:,} acknowledged, {acked_lost} lost; restarts "
          f"{', '.join(f'{s:.1f}' for s in restart_s)} s; log holds {len(offsets):,} events once each "
          f"({len(offsets) == len(items)}); parity with run 1 {restart_parity:.4f}", t0)

    r100 = lat["by_rate"][100.0]
    with figure(ROOT / "docs/img/serve_rec_latency.png", 2, (11, 3.6)) as (_, (a, b)):
        a.hist(r100["lat"], bins=60, color="tab:blue")
        a.axvline(np.percentile(r100["lat"], 99), color="k", ls="--", lw=1, label="p99")
        a.set(xlabel="ms", ylabel="requests", title="/v1/recommend at 100 req/s during a 10x stream")
        a.legend()
        rs = sorted(lat["by_rate"])
        b.plot(rs, [lat["by_rate"][r]["p50"] for r in rs], marker="o", label="p50")
        b.plot(rs, [lat["by_rate"][r]["p99"] for r in rs], marker="o", label="p99")
        b.axhline(100, color="grey", ls="--", lw=1)
        b.set(xlabel="offered requests/s", ylabel="ms", title="latency vs load", yscale="log")
        b.legend()

    result = {
        "top10_parity": round(parity, 4), "online_hr10": round(online_hr, 4),
        "offline_hr10": round(offline_hr["all"]["hr@10"], 4), "n_targets": len(keys),
        "recommend_p50_ms": round(r100["p50"], 2), "recommend_p99_ms": round(r100["p99"], 2),
        "recommend_max_rps": max(held) if held else 0, "sid_freshness_p99_ms": round(float(np.percentile(fresh, 99)), 2),
        "ingest_events_per_s": round(ingest), "acked_lost": acked_lost, "restart_top10_parity": round(restart_parity, 4),
        "swap_failed_requests": lat["swap_failed"], "swap_status": lat.get("swap_status"),
        "latency_by_rate": {str(int(r)): {"p50_ms": round(m["p50"], 2), "p99_ms": round(m["p99"], 2), "failed": m["failed"]}
                            for r, m in lat["by_rate"].items()},
        "seconds": round(time.perf_counter() - t0, 1), "quick": args.quick,
    }
    print()
    print(f"{'figure':<26}{'value':>12}  bar")
    for key, bar in (("top10_parity", ">= 0.99"), ("online_hr10", f"within 0.005 of {result['offline_hr10']}"),
                     ("recommend_p50_ms", ""), ("recommend_p99_ms", "<= 30"), ("recommend_max_rps", ">= 300"),
                     ("sid_freshness_p99_ms", "<= 100"), ("ingest_events_per_s", ">= 20000"), ("acked_lost", "= 0"),
                     ("restart_top10_parity", ">= 0.99"), ("swap_failed_requests", "= 0")):
        print(f"{key:<26}{result[key]!s:>12}  {bar}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
