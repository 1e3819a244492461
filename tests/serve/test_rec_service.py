"""The live recommendation service over real HTTP: uvicorn on a free port, httpx as the client."""

from __future__ import annotations

import dataclasses
import math
import threading

import httpx
import numpy as np
import pytest

from livemind.rec.data.feedback import ViewerState
from livemind.rec.data.prepare import tokenise
from livemind.rec.eval.offline import recommend_at
from livemind.rec.model.checkpoint import load_generator
from livemind.rec.model.prior import prior_signals
from livemind.rec.tokenizer.dynamic import DynamicTokenizer
from livemind.serve.api.app import ServeConfig
from livemind.serve.rec.engine import EngineConfig
from livemind.serve.rec.replay import replay, watch_targets, wire, world_stream
from livemind.world.live_log import LiveLog
from tests.serve.conftest import Server

ROOM = {"kind": "room_start", "room": 900, "streamer": 3, "start_time": 1767571300.0, "title": "new room"}
SEG = {"kind": "segment", "room": 900, "index": 0, "start_time": 1767571300.0, "product": 7, "topic": "beauty",
       "text": "on the card: Luma matte lipstick | only 12 left"}
WATCH = {"kind": "watch", "viewer": 5, "room": 900, "time": 1767571310.0, "value": 42.0}


class Offline:
    """The offline evaluation's answers on the whole world: the same tokenizer, generator and recommend."""

    def __init__(self, models, world) -> None:
        root, _ = models
        tok = DynamicTokenizer.load(root / "tok")
        _, _, self.log, self.live = tokenise(world, tok)
        self.model = load_generator(root / "gen", tok.version)
        self.signals = prior_signals(self.model.cfg, self.log, ViewerState.from_world(world), self.live)

    def top(self, viewer: int, t: float, k: int = 10) -> list[int]:
        return [r for r, _ in recommend_at(self.model, self.log, self.live, self.signals, viewer, t, k, 32)]


@pytest.mark.slow
def test_ingest_recommend_and_live_rooms_agree_with_the_offline_evaluation(models, tiny_world, serve_config):
    _, world = tiny_world
    start, until = 1767571200.0 + 19 * 3600, 1767571200.0 + 23 * 3600  # the evening: most rooms live
    targets = sorted(watch_targets(world, start, until, 25, seed=1), key=lambda x: x[1])
    with Server(serve_config) as srv:
        srv.wait_ready()
        res = replay(world, srv.url, start, until, speed=0, batch=200, targets=set(targets))
        assert res.requests == len(targets) == 25 and res.events > 1000
        state = httpx.get(srv.url + "/readyz").json()
        assert state["events"] == res.events and state["reencodes"] > 0
        live = httpx.get(srv.url + "/v1/rooms/live").json()
        assert live["time"] <= until and live["rooms"]
        assert all(len(r["sid"]) == 2 and r["since"] <= live["time"] for r in live["rooms"])
        # what is served is what the offline evaluation computes on the same state
        served = {(a["viewer"], a["time"]): a["rooms"] for a in res.answers}
        offline = Offline(models, world)
        for viewer, t in targets:
            assert served[(viewer, t)] == offline.top(viewer, t), (viewer, t)
        # a request without a time is served at the latest time the service has seen
        now = httpx.post(srv.url + "/v1/recommend", json={"viewer": targets[0][0], "k": 3}).json()
        assert now["time"] == live["time"] and len(now["rooms"]) == 3
        assert {r["room"] for r in now["rooms"]} <= {r["room"] for r in live["rooms"]}
        # an unknown viewer is a cold start, not an error; a time with nothing live gives no rooms
        cold = httpx.post(srv.url + "/v1/recommend", json={"viewer": 10**9, "k": 5}).json()
        assert cold["cold_start"] is True and len(cold["rooms"]) == 5
        empty = httpx.post(srv.url + "/v1/recommend", json={"viewer": 1, "time": 1767571200.0 - 3600}).json()
        assert empty["rooms"] == []
        metrics = httpx.get(srv.url + "/metrics").text
        assert f"livemind_events_ingested_total {float(res.events)}" in metrics
        assert 'livemind_request_seconds_count{route="/v1/recommend"}' in metrics
        assert "livemind_recommend_batch_size_count" in metrics and "livemind_live_rooms" in metrics


def test_a_new_segment_changes_the_sid_that_recommend_serves(serve_config):
    with Server(serve_config) as srv:
        srv.wait_ready()
        post = lambda events: httpx.post(srv.url + "/v1/events", json={"events": events})  # noqa: E731
        assert post([ROOM, SEG, WATCH]).json() == {"accepted": 3, "offset": 3}
        first = httpx.get(srv.url + "/v1/rooms/live").json()["rooms"]
        # a form (what a web page of another site can post without asking) is refused; JSON is read
        form = httpx.post(srv.url + "/v1/recommend", content=b'{"viewer": 5, "k": 3}',
                          headers={"content-type": "application/x-www-form-urlencoded"})
        assert form.status_code == 415 and form.json()["expected"] == "application/json"
        now = httpx.post(srv.url + "/v1/recommend", json={"viewer": 5, "k": 3})
        assert now.status_code == 200 and now.json()["time"] == WATCH["time"]  # "now": the latest event
        assert [(r["room"], r["product"], r["since"]) for r in first] == [(900, 7, 1767571300.0)]
        other = {**SEG, "index": 1, "start_time": 1767571330.0, "product": 8, "topic": "kitchen",
                 "text": "on the card: Brava cast iron skillet | free shipping over 50"}
        assert post([other]).json() == {"accepted": 1, "offset": 4}
        rec = httpx.post(srv.url + "/v1/recommend", json={"viewer": 5, "time": 1767571331.0}).json()
        assert [(r["room"], r["product"]) for r in rec["rooms"]] == [(900, 8)]
        assert set(rec["rooms"][0]) == {"room", "streamer", "sid", "product", "score"}  # no field sent as null
        assert rec["rooms"][0]["sid"] == httpx.get(srv.url + "/v1/rooms/live").json()["rooms"][0]["sid"]
        before = httpx.post(srv.url + "/v1/recommend", json={"viewer": 5, "time": 1767571320.0}).json()
        assert before["rooms"][0]["product"] == 7  # as of an earlier time: the segment shown then
        assert before["cold_start"] is False  # the watch at ...310 is history at ...320
        assert post([{"kind": "room_end", "room": 900, "time": 1767571400.0}]).status_code == 200
        assert httpx.get(srv.url + "/v1/rooms/live").json()["rooms"] == []
        assert httpx.post(srv.url + "/v1/recommend", json={"viewer": 5}).json()["rooms"] == []


BAD = [
    ("malformed JSON", b'{"events": [', 400, {"field": None, "expected": "a JSON object"}),
    ("missing field", {"events": [ROOM, {k: v for k, v in SEG.items() if k != "text"}]}, 422,
     {"index": 1, "field": "text", "value": None, "expected": "a value (the field is required)"}),
    ("wrong type", {"events": [{**ROOM, "streamer": "3"}]}, 422,
     {"index": 0, "field": "streamer", "value": "3", "expected": "Input should be a valid integer"}),
    ("unknown kind", {"events": [ROOM, {**WATCH, "kind": "dance"}]}, 422, {"index": 1, "field": "kind", "value": "dance"}),
    ("unknown field", {"events": [{**WATCH, "colour": "red"}]}, 422, {"index": 0, "field": "colour"}),
    ("negative watch", {"events": [ROOM, SEG, {**WATCH, "value": -5.0}]}, 422,
     {"index": 2, "field": "value", "value": -5.0, "expected": "a non-negative number for a watch"}),
    ("segment of a room never started", {"events": [SEG]}, 422,
     {"index": 0, "field": "room", "value": 900, "expected": "a room started by an earlier room_start"}),
    ("watch before the room started", {"events": [ROOM, {**WATCH, "time": 1767571000.0}]}, 422,
     {"index": 1, "field": "time", "value": 1767571000.0}),
    ("segment out of order", {"events": [ROOM, SEG, SEG]}, 422,
     {"index": 2, "field": "index", "value": 0, "expected": "above the room's last segment index 0"}),
    ("room started twice", {"events": [ROOM, ROOM]}, 422, {"index": 1, "field": "room", "value": 900}),
    ("oversized batch", {"events": [ROOM] + [WATCH] * 10_000}, 413, {"field": "events", "value": 10_001}),
    ("not a list", {"events": 5}, 422, {"field": "events", "index": None}),
    # numbers that are not numbers: refused naming the field, never stored (a NaN click once was)
    ("NaN value", b'{"events": [{"kind": "click", "viewer": 5, "room": 900, "time": 1767571310.0, "value": NaN}]}',
     422, {"index": 0, "field": "value", "value": "nan", "expected": "a finite number (NaN and Infinity are refused)"}),
    ("Infinity time", b'{"events": [{"kind": "room_start", "room": 901, "streamer": 3, "start_time": Infinity}]}',
     422, {"index": 0, "field": "start_time", "value": "inf"}),
    ("a number past a double", b'{"events": [{"kind": "watch", "viewer": 5, "room": 900, "time": 1e999}]}',
     422, {"index": 0, "field": "time", "value": "inf"}),
    ("an id past 2^53", {"events": [{**WATCH, "viewer": 2**64}]}, 422, {"index": 0, "field": "viewer"}),
    ("a time past the year 2286", {"events": [{**WATCH, "time": 1e12}]}, 422, {"index": 0, "field": "time"}),
    ("a long title", {"events": [{**ROOM, "title": "x" * 5000}]}, 422,
     {"index": 0, "field": "title", "value": "x" * 200 + "..."}),  # echoed values are cut
]


def test_every_bad_input_gets_its_4xx_json_and_stores_nothing(serve_config):
    with Server(serve_config) as srv:
        srv.wait_ready()
        assert httpx.post(srv.url + "/v1/events", json={"events": [{**ROOM, "room": 1}]}).json()["offset"] == 1
        for name, body, status, expect in BAD:
            kw = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) \
                else {"json": body}
            r = httpx.post(srv.url + "/v1/events", **kw)
            assert r.status_code == status, (name, r.text)
            got = r.json()
            assert set(got) == {"error", "field", "value", "expected", "index"}, name
            assert got["error"], name
            for key, want in expect.items():
                assert got[key] == want, (name, key, got)
        ready = httpx.get(srv.url + "/readyz").json()
        assert ready["events"] == 1 and ready["rooms"] == 1  # nothing of any refused batch was applied ...
        r = httpx.post(srv.url + "/v1/recommend", json={"viewer": -1})
        assert r.status_code == 422 and r.json()["field"] == "viewer"
        for raw, field in ((b'{"viewer": 1, "time": Infinity}', "time"), (b'{"viewer": 1, "time": NaN}', "time"),
                           (b'{"viewer": 1, "time": -1e400}', "time"), (b'{"viewer": 1, "k": 1e3}', "k")):
            r = httpx.post(srv.url + "/v1/recommend", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 422 and r.json()["field"] == field, (raw, r.text)
        r = httpx.post(srv.url + "/v1/recommend", json={"viewer": 1, "k": list(range(100_000))})
        assert r.status_code == 422 and len(r.json()["value"]) == 203  # a list is echoed as its text, cut
    log = LiveLog(serve_config.engine.store)
    assert log.count() == 1  # ... nor stored
    log.close()


def test_with_a_key_every_route_but_health_readiness_metrics_and_the_console_page_needs_it(serve_config, models):
    cfg = dataclasses.replace(serve_config, api_key="s3cret")
    key = {"Authorization": "Bearer s3cret"}
    with Server(cfg) as srv:
        srv.wait_ready()
        r = httpx.post(srv.url + "/v1/events", json={"events": [ROOM]})
        assert r.status_code == 401 and r.json()["field"] == "Authorization"
        r = httpx.post(srv.url + "/v1/events", json={"events": [ROOM]}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        assert httpx.post(srv.url + "/v1/admin/reload", json={}).status_code == 401
        ok = httpx.post(srv.url + "/v1/events", json={"events": [ROOM, SEG]}, headers=key)
        assert ok.status_code == 200 and ok.json()["accepted"] == 2
        for path in ("/v1/rooms/live", "/v1/models", "/v1/console/stream", "/openapi.json", "/docs"):
            assert httpx.get(srv.url + path).status_code == 401, path
        for path in ("/v1/recommend", "/v1/host/ask", "/v1/chat/completions"):
            assert httpx.post(srv.url + path, json={"viewer": 1}).status_code == 401, path
        chat = httpx.post(srv.url + "/v1/chat/completions", json={})
        assert chat.json()["error"]["param"] == "Authorization"  # OpenAI's error shape on the OpenAI route
        for path in ("/healthz", "/readyz", "/metrics", "/", "/static/console.js"):
            assert httpx.get(srv.url + path).status_code == 200, path
        assert httpx.get(srv.url + "/v1/rooms/live", headers=key).status_code == 200
        assert httpx.post(srv.url + "/v1/recommend", json={"viewer": 1}, headers=key).status_code == 200
    with Server(dataclasses.replace(cfg, open_reads=True)) as srv:  # the option that leaves reads open
        srv.wait_ready()
        assert httpx.get(srv.url + "/v1/rooms/live").status_code == 200
        assert httpx.post(srv.url + "/v1/recommend", json={"viewer": 1}).status_code == 200
        assert httpx.post(srv.url + "/v1/events", json={"events": [ROOM]}).status_code == 401
        assert httpx.post(srv.url + "/v1/admin/reload", json={}).status_code == 401


def test_a_page_of_another_site_cannot_post_and_bodies_are_capped_as_they_stream(serve_config):
    cfg = dataclasses.replace(serve_config, max_request_bytes=4096, max_body_bytes=64 * 1024)
    with Server(cfg) as srv:
        srv.wait_ready()
        # what a web page the operator visits can send without asking: a form, or JSON from its origin
        form = httpx.post(srv.url + "/v1/events", content=b'{"events": []}', headers={"content-type": "text/plain"})
        assert form.status_code == 415 and form.json()["field"] == "Content-Type"
        cross = httpx.post(srv.url + "/v1/events", json={"events": [ROOM]}, headers={"origin": "https://evil.example"})
        assert cross.status_code == 403 and cross.json()["field"] == "Origin"
        own = httpx.post(srv.url + "/v1/events", json={"events": [ROOM]}, headers={"origin": srv.url})
        assert own.status_code == 200
        big = b'{"viewer": 1, "pad": "' + b"x" * 10_000 + b'"}'
        r = httpx.post(srv.url + "/v1/recommend", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "4096 bytes" in r.json()["error"]

        def chunks():  # no Content-Length: the cap is counted while the body streams
            for _ in range(100):
                yield b" " * 1024

        r = httpx.post(srv.url + "/v1/events", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "65536 bytes" in r.json()["error"]
        assert httpx.get(srv.url + "/readyz").json()["events"] == 1  # nothing of the refused bodies was stored


def test_a_model_swap_under_load_fails_no_request(serve_config, models):
    root, _ = models
    with Server(serve_config) as srv:
        srv.wait_ready()
        httpx.post(srv.url + "/v1/events", json={"events": [ROOM, SEG, WATCH]})
        before = httpx.post(srv.url + "/v1/recommend", json={"viewer": 5}).json()["generator"]
        statuses, stop = [], threading.Event()

        def load() -> None:
            with httpx.Client(base_url=srv.url) as c:
                while not stop.is_set():
                    statuses.append(c.post("/v1/recommend", json={"viewer": 5}).status_code)

        workers = [threading.Thread(target=load) for _ in range(3)]
        for w in workers:
            w.start()

        def wait_for(n: int) -> None:
            while len(statuses) < n:
                threading.Event().wait(0.01)

        wait_for(10)
        swapped = httpx.post(srv.url + "/v1/admin/reload", json={"generator": str(root / "gen2")}, timeout=60).json()
        bad = httpx.post(srv.url + "/v1/admin/reload", json={"generator": str(root / "missing")})
        wait_for(len(statuses) + 10)
        stop.set()
        for w in workers:
            w.join()
        assert len(statuses) >= 20 and set(statuses) == {200}
        assert swapped["fingerprint"] != before and swapped["generator"] == str(root / "gen2")
        assert bad.status_code == 400 and "no such folder" in bad.json()["error"]
        after = httpx.post(srv.url + "/v1/recommend", json={"viewer": 5}).json()["generator"]
        assert after == swapped["fingerprint"]  # the failed reload left the new model serving


def test_readyz_says_why_the_service_cannot_load(serve_config, tmp_path):
    cfg = dataclasses.replace(serve_config, engine=dataclasses.replace(serve_config.engine, generator=tmp_path / "none"))
    with Server(cfg) as srv:
        for _ in range(200):
            r = httpx.get(srv.url + "/readyz")
            if "DataError" in r.text:
                break
        assert r.status_code == 503 and f"{tmp_path / 'none'}: no such folder" in r.json()["error"]
        assert r.json()["retry"] is False  # only a restart after a fix can make it ready
        r = httpx.post(srv.url + "/v1/recommend", json={"viewer": 1})
        assert r.status_code == 503 and r.json()["error"].startswith("the service is not ready")


def test_the_stream_of_a_world_is_in_live_order(tiny_world):
    _, world = tiny_world
    items = list(world_stream(world, 1767571200.0 + 16 * 3600))
    keys = [(t, o) for t, o, _ in items]
    assert keys == sorted(keys)
    kinds = [wire(r)["kind"] for _, _, r in items]
    assert kinds.count("room_start") >= kinds.count("room_end") > 0 and "segment" in kinds and "impression" in kinds
    assert all(math.isfinite(t) for t, _, _ in items)
    assert np.all(np.diff([t for t, _, _ in items]) >= 0)


@pytest.mark.slow
def test_a_refit_that_switches_the_generator_off_still_serves_finite_ordered_scores(models, tiny_world, tmp_path):
    """The demo's path: the prior refit on held-out rows (from where the demo's refit once left the
    weight of log P(SID), e^-87.66, which scored every room +inf and served it as null), saved,
    served, replayed: the scores are finite, in order, and the offline evaluation's."""
    import torch

    from livemind.rec.model.checkpoint import save_generator
    from livemind.rec.model.prior import fit_room_prior

    root, split = models
    _, world = tiny_world
    offline = Offline(models, world)
    with torch.no_grad():
        offline.model.log_lp_scale.fill_(-87.66)
    held = np.flatnonzero((offline.log.time >= split - 6 * 3600) & (offline.log.time < split))
    fit_room_prior(offline.model, offline.signals, held, iterations=20)
    save_generator(offline.model, tmp_path / "refit", DynamicTokenizer.load(root / "tok").version)
    offline.model = load_generator(tmp_path / "refit", DynamicTokenizer.load(root / "tok").version)
    cfg = ServeConfig(EngineConfig(root / "tok", tmp_path / "refit", tmp_path / "events.duckdb", cache=None))
    start, until = 1767571200.0 + 19 * 3600, 1767571200.0 + 21 * 3600
    targets = sorted(watch_targets(world, start, until, 10, seed=2), key=lambda x: x[1])
    served = []
    with Server(cfg) as srv:
        srv.wait_ready()
        res = replay(world, srv.url, start, until, speed=0, batch=200, targets=set(targets),
                     on_request=lambda answer, _: served.append(answer))
    assert res.requests == len(targets) == len(served)
    for a in served:
        scores = [r["score"] for r in a["rooms"]]
        assert scores and all(isinstance(s, float) and math.isfinite(s) for s in scores)
        assert scores == sorted(scores, reverse=True)
        assert [r["room"] for r in a["rooms"]] == offline.top(a["viewer"], a["time"])


def test_a_committed_batch_that_cannot_be_applied_stops_serving_instead_of_serving_half_of_it(serve_config,
                                                                                             monkeypatch):
    from livemind.rec.live.state import LiveState

    apply = LiveState.apply

    def failing(self, records):
        if any(getattr(r, "text", "") == "boom" for r in records):
            raise RuntimeError("a bug in apply")
        return apply(self, records)

    monkeypatch.setattr(LiveState, "apply", failing)
    with Server(serve_config) as srv:
        srv.wait_ready()
        assert httpx.post(srv.url + "/v1/events", json={"events": [ROOM, SEG]}).status_code == 200
        r = httpx.post(srv.url + "/v1/events", json={"events": [{**SEG, "index": 1, "text": "boom"}]})
        assert r.status_code == 503 and "offset 3 are stored but could not be applied" in r.json()["error"]
        ready = httpx.get(srv.url + "/readyz")
        assert ready.status_code == 503 and "RuntimeError: a bug in apply" in ready.json()["error"]
        for path, body in (("/v1/recommend", {"viewer": 5}), ("/v1/events", {"events": [WATCH]})):
            assert httpx.post(srv.url + path, json=body).status_code == 503, path
    monkeypatch.setattr(LiveState, "apply", apply)
    with Server(serve_config) as srv:  # a restart rebuilds the state from the log, the stored batch included
        assert srv.wait_ready()["events"] == 3


def test_past_its_limiter_a_stream_is_refused_with_retry_after_and_the_others_still_answer(serve_config):
    cfg = dataclasses.replace(serve_config, max_streams=1)
    with Server(cfg) as srv:
        srv.wait_ready()
        with httpx.stream("GET", srv.url + "/v1/console/stream", timeout=10) as held:
            assert held.status_code == 200
            lines = held.iter_lines()  # kept: a dropped iterator would close the connection
            next(lines)  # the first frame: the stream holds its place
            second = httpx.get(srv.url + "/v1/console/stream", timeout=10)
            assert second.status_code == 503 and second.headers["retry-after"] == "1"
            assert second.json()["expected"] == "at most 1 console streams at once"
            assert httpx.post(srv.url + "/v1/recommend", json={"viewer": 1}).status_code == 200
        # the place is given back when the stream ends
        with httpx.stream("GET", srv.url + "/v1/console/stream", timeout=10) as again:
            assert again.status_code == 200
