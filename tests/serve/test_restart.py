"""An acknowledged event survives kill -9: the restarted service rebuilds its state from the log and
answers exactly as before."""

from __future__ import annotations

import httpx
import pytest

from livemind.serve.process import ServiceProcess
from livemind.serve.rec.replay import wire, world_stream
from livemind.world.live_log import LiveLog

pytestmark = pytest.mark.slow


def service(models, store) -> ServiceProcess:
    root, _ = models
    return ServiceProcess(["--tokenizer", root / "tok", "--generator", root / "gen", "--store", store,
                           "--cache", store.parent / "cache"], log=store.parent / "service.log")


def test_kill_9_loses_no_acknowledged_event_and_the_restart_answers_the_same(models, tiny_world, tmp_path):
    _, world = tiny_world
    store = tmp_path / "events.duckdb"
    srv = service(models, store)
    url = srv.url
    events = [wire(r) for _, _, r in world_stream(world, 1767571200.0 + 21 * 3600)]
    srv.start(timeout=120)
    acked = 0
    try:
        for i in range(0, len(events), 300):
            r = httpx.post(url + "/v1/events", json={"events": events[i:i + 300]})
            assert r.status_code == 200
            acked = r.json()["offset"]
        asks = [{"viewer": v, "time": 1767571200.0 + 21 * 3600, "k": 5} for v in (0, 3, 17, 250)]
        before = [httpx.post(url + "/v1/recommend", json=a).json()["rooms"] for a in asks]
        live = httpx.get(url + "/v1/rooms/live").json()
    finally:
        srv.kill9()
    assert acked == len(events)
    srv.start(timeout=120)  # the same port and store
    try:
        ready = httpx.get(url + "/readyz").json()
        assert ready["events"] == acked  # every acknowledged event is back
        assert [httpx.post(url + "/v1/recommend", json=a).json()["rooms"] for a in asks] == before
        assert httpx.get(url + "/v1/rooms/live").json() == live
        more = httpx.post(url + "/v1/events", json={"events": [wire(r) for _, _, r in
                                                               world_stream(world, 1767571200.0 + 22 * 3600)][len(events):][:50]})
        assert more.json()["offset"] == acked + 50  # the log continues where it stopped
    finally:
        srv.kill9()


def test_the_cli_serves_the_host_alone_from_a_student_folder(models, tiny_world, tmp_path):
    from typer.testing import CliRunner

    from livemind.cli import app
    from tests.think.tiny_lm import tiny_llama, tiny_tokenizer

    root, _ = models
    res = CliRunner().invoke(app, ["serve", "--tokenizer", str(root / "tok"), "--generator", str(root / "gen"),
                                   "--student", "x"])
    assert res.exit_code == 2 and "--student needs --catalog" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["serve", "--host-only", "--tokenizer", str(root / "tok")])
    assert res.exit_code == 2 and "--host-only serves the host alone" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["serve"])
    assert res.exit_code == 2 and "--tokenizer 'None' is not a folder" in " ".join(res.output.split())
    _, world = tiny_world
    world.save(tmp_path / "world")
    student = tmp_path / "student"
    tiny_llama().save_pretrained(student)
    tiny_tokenizer().save_pretrained(student)
    srv = ServiceProcess(["--host-only", "--store", tmp_path / "events.duckdb", "--student", student,
                          "--catalog", tmp_path / "world", "--host-name", "tiny-host", "--host-tokens", "8"],
                         log=tmp_path / "service.log")
    srv.start(timeout=60)
    try:
        url = srv.url
        assert httpx.get(url + "/readyz").json()["host"] == "tiny-host"
        r = httpx.post(url + "/v1/chat/completions", json={"model": "tiny-host", "messages": [{"role": "user", "content": "hi"}]},
                       timeout=60).json()
        assert r["object"] == "chat.completion" and 1 <= r["usage"]["completion_tokens"] <= 8
    finally:
        srv.kill9()


def test_a_retried_batch_id_is_acknowledged_again_and_applied_once_across_a_kill_9(serve_config):
    """A client whose reply was lost sends the batch again with its id: the same offset comes back and
    the events are stored and applied once, also when the service was killed between commit and reply."""
    from tests.serve.conftest import Server
    from tests.serve.test_rec_service import ROOM, SEG, WATCH

    key = {"batch_id": "platform-7"}
    with Server(serve_config) as srv:
        srv.wait_ready()
        first = httpx.post(srv.url + "/v1/events", json={"events": [ROOM, SEG], **key}).json()
        again = httpx.post(srv.url + "/v1/events", json={"events": [ROOM, SEG], **key})
        assert again.status_code == 200 and again.json() == first == {"accepted": 2, "offset": 2}
        assert httpx.get(srv.url + "/readyz").json()["events"] == 2
    # the commit happened, the reply never came (the process died): a new service answers the retry
    log = LiveLog(serve_config.engine.store)
    log.append([to_record_of(WATCH)], batch_id="platform-8")  # committed as the killed service would have
    log.close()
    with Server(serve_config) as srv:
        srv.wait_ready()
        retry = httpx.post(srv.url + "/v1/events", json={"events": [WATCH], "batch_id": "platform-8"}).json()
        assert retry == {"accepted": 1, "offset": 3}
        assert httpx.get(srv.url + "/readyz").json()["events"] == 3  # applied once, when the state was rebuilt


def to_record_of(event: dict):
    from livemind.serve.api.protocol import EventBatchIn, to_record

    return to_record(EventBatchIn.model_validate({"events": [event]}).events[0])


def test_a_service_whose_models_fail_to_load_ends_the_wait_at_once_with_the_reason(models, tmp_path):
    """A generator from another tokenizer fails at load, after the CLI's checks: /readyz says so with
    `"retry": false`, and `ServiceProcess.start` stops at once with the reason instead of waiting out
    its timeout (a benchmark once waited 15 minutes on it)."""
    import time

    from livemind.errors import DataError
    from livemind.rec.model.checkpoint import load_generator, save_generator
    from livemind.rec.tokenizer.dynamic import DynamicTokenizer

    root, _ = models
    model = load_generator(root / "gen", DynamicTokenizer.load(root / "tok").version)
    save_generator(model, tmp_path / "stale", "tok-0123456789ab")
    srv = ServiceProcess(["--tokenizer", root / "tok", "--generator", tmp_path / "stale", "--store", tmp_path / "events.duckdb",
                          "--cache", tmp_path / "cache"], log=tmp_path / "service.log")
    started = time.perf_counter()
    with pytest.raises(DataError, match="cannot become ready: DataError: generator checkpoint .* was trained on tokenizer "
                                        "tok-0123456789ab"):
        srv.start(timeout=600)
    assert time.perf_counter() - started < 120
    assert srv.proc is not None and srv.proc.poll() is not None  # killed, not left running
