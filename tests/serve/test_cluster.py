"""A local cluster of real processes: redis-server, tokenizer workers in two shards, the
state and archive workers, two `livemind serve --broker` replicas. Workers are killed with -9 in the
middle of the stream and restarted; no acknowledged event is lost or applied twice, and both
replicas answer /v1/recommend exactly as the single-process service does on the same events."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import orjson
import pytest

from livemind.serve.process import free_port
from livemind.serve.rec.replay import watch_targets, wire
from livemind.serve.scale.broker import Broker
from livemind.serve.scale.cluster import Cluster, ClusterConfig
from livemind.world.live_log import LiveLog
from tests.serve.conftest import Server
from tests.serve.test_broker import T0, batches, lag, world_records

pytestmark = pytest.mark.slow


def post(url: str, batch: list) -> int:
    r = httpx.post(url + "/v1/events", content=orjson.dumps({"events": [wire(x) for x in batch]}),
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["offset"]


def test_a_cluster_with_workers_killed_mid_stream_serves_what_one_process_serves(models, tiny_world, serve_config,
                                                                               tmp_path):
    root, _ = models
    _, world = tiny_world
    records = world_records(world, 21.0)
    parts = batches(records, 200)
    targets = sorted(watch_targets(world, T0 + 19 * 3600, T0 + 21 * 3600, 30, seed=2), key=lambda x: x[1])
    cfg = ClusterConfig(root / "tok", root / "gen", tmp_path / "cluster", workers=2, replicas=2, port=free_port(),
                        claim_idle_ms=500)
    with Cluster(cfg) as cluster:
        kills = {len(parts) // 4: "tokenizer-1", len(parts) // 2: "state", 3 * len(parts) // 4: "tokenizer-0"}
        acked = 0
        for i, part in enumerate(parts):
            if i in kills:  # kill -9 mid-stream, go on posting, restart it a moment later
                cluster.kill9(kills[i])
            if i - 3 in kills:
                cluster.start(kills[i - 3])
            acked = post(cluster.urls[i % 2], part)  # ingest through either replica
        assert acked == len(records)
        served = []
        for url in cluster.urls:
            answers = [httpx.post(url + "/v1/recommend", json={"viewer": v, "time": t, "offset": acked}, timeout=60)
                       for v, t in targets]
            assert all(a.status_code == 200 for a in answers), answers[0].text
            served.append([[x["room"] for x in a.json()["rooms"]] for a in answers])
            ready = httpx.get(url + "/readyz").json()
            assert ready["offset"] == ready["events"] == len(records)  # every event applied, none twice
        # an offset the broker never gave out is refused at once (no wait could see it applied)
        t0 = time.perf_counter()
        late = httpx.post(cluster.urls[0] + "/v1/recommend", json={"viewer": 1, "offset": acked + 10}, timeout=30)
        assert late.status_code == 422 and late.json()["field"] == "offset" and late.json()["value"] == acked + 10
        assert time.perf_counter() - t0 < 2 and f"at most {acked} now" in late.json()["expected"]
        b = Broker(cluster.broker)
        deadline = time.time() + 30
        while (lag(b, b.events, "archive") or b.r.xpending(b.events, "archive")["pending"]) and time.time() < deadline:
            time.sleep(0.05)
        b.close()
        cluster.stop("archive")
        archived = LiveLog(cfg.dir / "archive.duckdb")
        assert np.array_equal(archived.offsets(), np.arange(1, len(records) + 1))  # each event once
        archived.close()
    with Server(serve_config) as srv:
        srv.wait_ready()
        for part in parts:
            post(srv.url, part)
        single = [[x["room"] for x in httpx.post(srv.url + "/v1/recommend", json={"viewer": v, "time": t}).json()["rooms"]]
                  for v, t in targets]
    assert any(single)
    assert served[0] == single and served[1] == single


def test_cluster_up_starts_every_process_and_ctrl_c_stops_them(models, tmp_path):
    root, _ = models
    port, rport = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "livemind.cli", "cluster", "up", "--tokenizer", str(root / "tok"),
                             "--generator", str(root / "gen"), "--dir", str(tmp_path / "c"), "--port", str(port),
                             "--redis-port", str(rport)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "LIVEMIND_API_KEY": ""})
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["broker"] == f"redis://127.0.0.1:{rport}/0"
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out
    for name in ("redis", "archive", "state", "tokenizer-0", "replica-0"):
        assert name in out
    assert "cluster stopped" in out
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    import redis

    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=rport, socket_connect_timeout=1).ping()
