"""Scale-out on Redis Streams, measured.

World, tokenizer (MiniLM int8) and generator + live-room prior are benchmarks/rec_quality.py's, as in
serve_rec.py; everything runs on this machine's 2 cores as separate processes (`livemind.serve.scale.cluster`).

1. re-encoding: N segments (with their rooms' starts) appended to the broker, then 1 or 2 tokenizer
   workers (`--threads 1` each, an empty embedding cache: every segment goes through MiniLM) re-encode
   them; `reencode_per_s_1`, `reencode_per_s_2` = segments / wall time until every entry is acknowledged.
2. faults and parity: a cluster (2 tokenizer shards, 2 replicas, appendfsync always) takes the whole
   world's stream through both replicas' /v1/events; a tokenizer worker and the state worker are each
   killed with -9 three times at random points and restarted; before each sampled held-out watch, a
   replica answers /v1/recommend (with the consistency `offset` of the last acknowledged batch).
   `lost` = acknowledged events missing from the applied log or from a replica's state or from the
   archive, `applied_twice` = events applied more than once, `cluster_top10_parity` = answers equal to
   the offline `recommend` on the same (viewer, time) — which the single-process service reproduces
   exactly (serve_rec.py: `top10_parity` 1.000).
3. recommendation throughput: open-loop /v1/recommend at rising rates against 1 replica, then spread
   over 2; the highest rate whose p99 <= 100 ms for each.
4. Redis itself: the archive stopped (so nothing is trimmed), batches appended, redis-server killed
   with -9 right after the last acknowledgement and restarted on its AOF: `redis_restart_lost`.

Run: python benchmarks/serve_scale.py [--quick]   (last line: JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import torch

ROOT = Path(__file__).resolve().parent.parent

from common import bench_models, stage, stream_items  # noqa: E402

from livemind.rec.data.feedback import ViewerState  # noqa: E402
from livemind.rec.data.prepare import prepare  # noqa: E402
from livemind.rec.eval.offline import recommend_at  # noqa: E402
from livemind.rec.model.checkpoint import load_generator  # noqa: E402
from livemind.rec.model.prior import prior_signals  # noqa: E402
from livemind.rec.tokenizer.dynamic import DynamicTokenizer  # noqa: E402
from livemind.report import figure  # noqa: E402
from livemind.serve.process import free_port  # noqa: E402
from livemind.serve.rec.replay import world_stream  # noqa: E402
from livemind.serve.scale.broker import Broker  # noqa: E402
from livemind.serve.scale.cluster import Cluster, ClusterConfig  # noqa: E402
from livemind.world.live_log import LiveLog, RoomEnd  # noqa: E402
from livemind.world.schema import Room, Segment  # noqa: E402


def drained(b: Broker, stream: str, groups: list[str]) -> bool:
    info = {g["name"].decode(): g for g in b.r.xinfo_groups(stream)}
    return all(g in info and info[g]["lag"] == 0 and info[g]["pending"] == 0 for g in groups)


def reencode(tok_dir: Path, world, n_segments: int, workers: int, out: Path, unique: bool) -> float:
    """Segments per second re-encoded by `workers` tokenizer workers from a cold embedding cache;
    `unique`: only segments whose text is new (every one goes through MiniLM), else the stream as it is
    (a room's card text repeats across its segments, and repeats hit the cache)."""
    shutil.rmtree(out, ignore_errors=True)
    cache = out / "cache"
    cluster = Cluster(ClusterConfig(tok_dir, tok_dir, out, workers=workers, replicas=1, cache=cache, port=free_port()))
    cluster.start("redis")
    b = Broker(cluster.broker)
    for i in range(workers):
        cluster.start(f"tokenizer-{i}")
    groups = [f"tokenizer-{i}of{workers}" for i in range(workers)]
    while True:  # every worker loaded and reading (it has made its group and read once)
        try:
            consumers = [b.r.xinfo_consumers(b.rooms, g) for g in groups]
            if all(consumers):
                break
        except Exception:
            pass
        time.sleep(0.1)
    records, n, seen = [], 0, set()
    for _, _, r in world_stream(world):
        if isinstance(r, Segment) and unique:
            if r.text in seen:
                continue
            seen.add(r.text)
        if isinstance(r, Room | RoomEnd | Segment):
            records.append(r)
            n += isinstance(r, Segment)
            if n >= n_segments:
                break
    t0 = time.perf_counter()
    for i in range(0, len(records), 200):
        b.append(records[i:i + 200])
    while not drained(b, b.rooms, groups):
        time.sleep(0.02)
    seconds = time.perf_counter() - t0
    done = len(b.r.hkeys(b.sid))
    b.close()
    cluster.down()
    assert done == n, f"{done} SIDs published for {n} segments"
    return n / seconds


async def open_loop(urls: list[str], rate: float, seconds: float, viewers: np.ndarray) -> tuple[np.ndarray, int]:
    """Requests at `rate`/s for `seconds`, round-robin over `urls`, each on its own task."""
    clients = [httpx.AsyncClient(base_url=u, timeout=10.0, limits=httpx.Limits(max_connections=256)) for u in urls]
    rng = np.random.default_rng(int(rate))
    lat: list[float] = []
    fails = [0]

    async def one(c: httpx.AsyncClient, v: int) -> None:
        s = time.perf_counter()
        try:
            ok = (await c.post("/v1/recommend", json={"viewer": int(v), "k": 10})).status_code == 200
        except httpx.HTTPError:
            ok = False
        lat.append(1000 * (time.perf_counter() - s))
        fails[0] += not ok

    tasks, t0 = [], time.perf_counter()
    for i in range(int(rate * seconds)):
        wait = t0 + i / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(clients[i % len(clients)], rng.choice(viewers))))
    await asyncio.gather(*tasks)
    for c in clients:
        await c.aclose()
    return np.array(lat), fails[0]


def max_rate(urls: list[str], rates: list[float], window: float, viewers: np.ndarray) -> tuple[float, dict]:
    by_rate = {}
    for rate in rates:
        lat, fails = asyncio.run(open_loop(urls, rate, window, viewers))
        p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
        by_rate[rate] = {"p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "failed": fails}
        print(f"    {len(urls)} replica(s) {rate:6.0f} req/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms, {fails} failed", flush=True)
        if p99 > 100.0 or fails:
            break
    held = [r for r, m in by_rate.items() if m["p99_ms"] <= 100.0 and not m["failed"]]
    return (max(held) if held else 0.0), by_rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer segments, targets and rates (under 10 minutes)")
    ap.add_argument("--bench", default="runs/bench_rec", help="benchmarks/rec_quality.py's output folder")
    ap.add_argument("--out", default="runs/bench_scale")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    bench, out = ROOT / args.bench, ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    world, split, tok_dir, gen_dir = bench_models(bench)
    stage(f"world; tokenizer {tok_dir.name}", t0)

    # 1. re-encoding with 1 and 2 tokenizer workers
    n_seg = 1500 if args.quick else 5000
    enc = {}
    for unique in (True, False):
        for k in (1, 2):
            enc[unique, k] = reencode(tok_dir, world, n_seg, k, out / f"reencode{k}", unique)
            stage(f"re-encoding {'new texts' if unique else 'the stream as it is'}, {k} worker(s): "
                  f"{enc[unique, k]:.0f} segments/s", t0)
    rate1, rate2 = enc[True, 1], enc[True, 2]

    # 2. the whole stream through a cluster, workers killed -9 and restarted, parity with the offline recommend
    n_targets = 200 if args.quick else 1000
    tok = DynamicTokenizer.load(tok_dir, cache_dir=bench / "embeddings")
    data = prepare(world, tok, split, n_eval=n_targets, seed=0)
    model = load_generator(gen_dir, tok.version)
    signals = prior_signals(model.cfg, data.log, ViewerState.from_world(world), data.live)
    keys = [(int(data.log.viewer[r]), float(data.log.time[r])) for r in data.eval_rows]
    with torch.inference_mode():
        offline = {k: [r for r, _ in recommend_at(model, data.log, data.live, signals, k[0], k[1], 10, 32)] for k in keys}
    del tok, data
    items = stream_items(world, max(t for _, t in keys) + 1)
    stage(f"offline recommend for {len(keys)} targets; {len(items):,} events to replay", t0)
    shutil.rmtree(out / "cluster", ignore_errors=True)
    cluster = Cluster(ClusterConfig(tok_dir, gen_dir, out / "cluster", workers=2, replicas=2,
                                    cache=bench / "embeddings", port=free_port(), claim_idle_ms=2000))
    cluster.up()
    rng = np.random.default_rng(26)
    n_batches = (len(items) + 499) // 500
    kill_at = {int(b): name for b, name in zip(rng.choice(np.arange(n_batches // 10, n_batches - 5), 6, replace=False),
                                               ["tokenizer-0", "state", "tokenizer-1", "state", "tokenizer-0", "state"])}
    restarts: list[threading.Timer] = []
    https = [httpx.Client(base_url=u, timeout=120.0) for u in cluster.urls]
    answers: dict = {}
    acked, batch_no, pending = 0, 0, []
    targets = set(keys)
    ingest_s = 0.0
    stalls = 0  # requests that waited > 5 s for the pipeline (while a killed worker restarted)
    caught_up: list = []  # (events, s from the replay's start until both replicas applied them, s waited)

    def send() -> None:
        nonlocal acked, batch_no, ingest_s
        if batch_no in kill_at:  # kill -9, restarted a second later (as a supervisor would)
            cluster.kill9(kill_at[batch_no])
            timer = threading.Timer(1.0, cluster.start, [kill_at[batch_no]])
            timer.start()
            restarts.append(timer)
        s = time.perf_counter()
        r = https[batch_no % 2].post("/v1/events", content=orjson.dumps({"events": pending}),
                                     headers={"content-type": "application/json"})
        ingest_s += time.perf_counter() - s
        if r.status_code != 200:
            raise RuntimeError(f"refused: {r.status_code} {r.text[:300]}")
        acked = r.json()["offset"]
        batch_no += 1
        pending.clear()

    t_replay = time.perf_counter()
    for t, _, body, key in items:
        if key is not None and key in targets and key not in answers:
            if pending:
                send()
            h = https[len(answers) % 2]
            if not caught_up:  # the warm-up went in as fast as the API takes it: let the pipeline catch up once
                w = time.perf_counter()
                while min(x.get("/readyz").json()["offset"] for x in https) < acked:
                    time.sleep(0.2)
                caught_up.append((acked, time.perf_counter() - t_replay, time.perf_counter() - w))
                stage(f"warm-up: {acked:,} events acknowledged in {ingest_s:.0f} s; applied by both replicas "
                      f"{time.perf_counter() - t_replay:.0f} s after the first", t0)
            r = h.post("/v1/recommend", json={"viewer": key[0], "time": t, "k": 10, "offset": acked})
            while r.status_code == 503 and r.json().get("field") == "offset":  # a killed worker is restarting
                stalls += 1
                r = h.post("/v1/recommend", json={"viewer": key[0], "time": t, "k": 10, "offset": acked})
            if r.status_code != 200:
                raise RuntimeError(f"/v1/recommend: {r.status_code} {r.text[:300]}")
            answers[key] = [x["room"] for x in r.json()["rooms"]]
        pending.append(body)
        if len(pending) >= 500:
            send()
    if pending:
        send()
    for timer in restarts:
        timer.join()
    replay_s = time.perf_counter() - t_replay
    b = Broker(cluster.broker)
    deadline = time.time() + 300
    while time.time() < deadline and not all(
            h.get("/readyz").json()["offset"] >= acked for h in https):
        time.sleep(0.1)
    ready = [h.get("/readyz").json() for h in https]
    firsts = [(e.first, len(e.records)) for e in b.entries(b.applied)]
    ids = np.concatenate([np.arange(f, f + n) for f, n in firsts])
    applied_twice = int(len(ids) - len(np.unique(ids))) + sum(max(0, r["events"] - acked) for r in ready)
    lost_applied = int(acked - len(np.intersect1d(ids, np.arange(1, acked + 1))))
    lost_replica = sum(max(0, acked - r["events"]) for r in ready)
    while not drained(b, b.events, ["archive"]) and time.time() < deadline:
        time.sleep(0.1)
    cluster.stop("archive")
    log = LiveLog(out / "cluster" / "archive.duckdb")
    offsets = log.offsets()
    log.close()
    lost_archive = int(acked - len(np.intersect1d(offsets, np.arange(1, acked + 1))))
    applied_twice += int(len(offsets) - len(np.unique(offsets)))
    lost = lost_applied + lost_replica + lost_archive
    parity = float(np.mean([answers.get(k) == offline[k] for k in keys]))
    stage(f"replayed {acked:,} events in {replay_s:.0f} s through 2 replicas with 6 kill -9s: lost {lost}, applied twice "
          f"{applied_twice}, parity {parity:.4f}", t0)

    # 3. recommendation throughput, 1 replica and 2 (the archive is stopped; nothing else is streaming)
    viewers = np.unique(np.array([k[0] for k in keys]))
    rates = [100.0, 200.0, 300.0, 400.0, 500.0, 600.0] if args.quick else [100.0, 200.0, 300.0, 350.0, 400.0, 500.0, 600.0]
    window = 6.0 if args.quick else 15.0
    rps1, by1 = max_rate(cluster.urls[:1], rates, window, viewers)
    rps2, by2 = max_rate(cluster.urls, rates, window, viewers)
    stage(f"recommend at p99 <= 100 ms: 1 replica {rps1:.0f}/s, 2 replicas {rps2:.0f}/s", t0)

    # 4. kill -9 of redis-server right after acknowledged appends (appendfsync always), restart on its AOF
    last_before = b.last_event()
    rooms = [Room(10_000_000 + i, 1, items[-1][0] + 1, float("inf"), "") for i in range(200)]
    acked_ids = [b.append([r]) for r in rooms]
    b.close()
    cluster.kill9("redis")
    cluster.start("redis")
    b = Broker(cluster.broker)
    stored = {e.first for e in b.entries(b.events)}
    redis_lost = sum(1 for i in acked_ids if i not in stored)
    assert b.last_event() == last_before + len(rooms)
    b.close()
    cluster.down()
    stage(f"redis-server kill -9 after {len(acked_ids)} acknowledged appends, restarted: {redis_lost} lost", t0)

    with figure(ROOT / "docs/img/serve_scale.png", 2, (11, 3.6)) as (_, (a, c)):
        xs = np.arange(2)
        a.bar(xs - 0.2, [rate1, rate2], 0.4, label="every text new")
        a.bar(xs + 0.2, [enc[False, 1], enc[False, 2]], 0.4, label="the stream (repeats cached)")
        a.set_xticks(xs, ["1 worker", "2 workers"])
        a.set(ylabel="segments / s", title="re-encoding (MiniLM int8), 2 cores")
        a.legend()
        for by, label in ((by1, "1 replica"), (by2, "2 replicas")):
            rs = sorted(by)
            c.plot(rs, [by[r]["p99_ms"] for r in rs], marker="o", label=label)
        c.axhline(100, color="grey", ls="--", lw=1)
        c.set(xlabel="offered requests/s", ylabel="p99 ms", yscale="log", title="/v1/recommend p99")
        c.legend()

    result = {
        "reencode_per_s_1": round(rate1, 1), "reencode_per_s_2": round(rate2, 1), "reencode_ratio": round(rate2 / rate1, 3),
        "reencode_stream_per_s_1": round(enc[False, 1], 1), "reencode_stream_per_s_2": round(enc[False, 2], 1),
        "recommend_rps_1": rps1, "recommend_rps_2": rps2, "recommend_ratio": round(rps2 / rps1, 3) if rps1 else None,
        "lost": lost, "applied_twice": applied_twice, "cluster_top10_parity": round(parity, 4),
        "n_targets": len(keys), "events": acked, "kills": 6, "replay_s": round(replay_s, 1),
        "ingest_events_per_s": round(acked / ingest_s),
        "pipeline_events_per_s": round(caught_up[0][0] / caught_up[0][1]), "stalled_requests": stalls, "redis_restart_lost": redis_lost,
        "cores_for_100k_rooms": round(3300 / rate1, 1), "cores_for_100k_rps": round(100_000 / rps1, 1) if rps1 else None,
        "latency_1": {str(int(r)): m for r, m in by1.items()}, "latency_2": {str(int(r)): m for r, m in by2.items()},
        "seconds": round(time.perf_counter() - t0, 1), "quick": args.quick,
    }
    print()
    print(f"{'figure':<26}{'value':>12}  bar")
    for key, bar in (("reencode_per_s_1", ""), ("reencode_per_s_2", ""), ("reencode_ratio", "near 2 (not on 2 cores)"),
                     ("recommend_rps_1", ""), ("recommend_rps_2", ""), ("lost", "= 0"), ("applied_twice", "= 0"),
                     ("cluster_top10_parity", ">= 0.99"), ("redis_restart_lost", "= 0"),
                     ("cores_for_100k_rooms", "3,300 segments/s"), ("cores_for_100k_rps", "")):
        print(f"{key:<26}{result[key]!s:>12}  {bar}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
