"""The live console in a real headless browser (the system's chromium driven by Playwright: no
browser download), against the real server: live rooms arrive, a viewer's recommendations appear
beside popularity's, a question gets a streamed answer, no console errors, phone-sized too."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import httpx
import pytest

from livemind.serve.host.decoder import BatchDecoder
from livemind.serve.host.serving import Generation, Host, HostConfig
from livemind.think.prompts import split_reasoning
from livemind.think.tasks import products_of
from tests.serve.conftest import Server
from tests.serve.test_rec_service import ROOM, SEG, WATCH
from tests.think.tiny_lm import tiny_llama, tiny_tokenizer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOM2 = {**ROOM, "room": 901, "streamer": 4, "title": "second room"}
SEG2 = {**SEG, "room": 901, "product": 8, "text": "on the card: a lamp"}
EVENTS = [ROOM, {**SEG, "product": 7}, ROOM2, SEG2, WATCH, {**WATCH, "room": 901, "time": WATCH["time"] + 1},
          {**WATCH, "viewer": 6, "room": 901, "time": WATCH["time"] + 2},
          {**WATCH, "viewer": 7, "room": 900, "time": WATCH["time"] + 3}]  # "now": audiences count watches before it


@pytest.fixture
def console(serve_config, tiny_world):
    _, world = tiny_world
    catalog = {p.id: p for p in products_of(world)}
    host = Host(HostConfig("tiny", max_tokens=16), BatchDecoder(tiny_tokenizer(), tiny_llama()), catalog)
    with Server(dataclasses.replace(serve_config, host=host.cfg), host=host) as srv:
        srv.wait_ready()
        assert httpx.post(srv.url + "/v1/events", json={"events": EVENTS}).status_code == 200
        yield srv, host, catalog
    host.decoder.close()


def test_the_console_stream_and_the_popularity_policy(console):
    srv, _, catalog = console
    with httpx.stream("GET", srv.url + "/v1/console/stream", timeout=10) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        frame = json.loads(next(line for line in r.iter_lines() if line.startswith("data: "))[6:])
    rooms = {x["room"]: x for x in frame["rooms"]}
    assert set(rooms) == {900, 901}
    assert (rooms[900]["audience"], rooms[901]["audience"]) == (1, 2)
    assert rooms[900]["product_name"] == catalog[7].name and rooms[901]["product"] == 8 and rooms[900]["sid"]
    assert frame["time"] == WATCH["time"] + 3 and frame["stats"]["live_rooms"] == 2 and frame["stats"]["events"] == len(EVENTS) and frame["stats"]["host"]
    pop = httpx.post(srv.url + "/v1/recommend", json={"viewer": 5, "policy": "popularity"}).json()
    assert [(x["room"], x["score"]) for x in pop["rooms"]] == [(901, 2.0), (900, 1.0)] and pop["generator"] == "popularity"
    bad = httpx.post(srv.url + "/v1/recommend", json={"viewer": 5, "policy": "random"})
    assert bad.status_code == 422 and bad.json()["field"] == "policy"
    page = httpx.get(srv.url + "/")
    assert page.status_code == 200 and "<title>livemind console</title>" in page.text
    assert "cdn" not in page.text.lower() and httpx.get(srv.url + "/static/console.js").status_code == 200


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="no system chromium (apt install chromium)")
def test_the_console_in_a_headless_browser(console, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    srv, host, catalog = console
    expected_recs = httpx.post(srv.url + "/v1/recommend", json={"viewer": 5}).json()["rooms"]
    gen = Generation()
    "".join(host.decoder.stream(host.prompt(7, 900, 1, "how much is it?"), 16, gen=gen))  # what the host will answer
    answer = split_reasoning(gen.text)[1]
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(srv.url + "/")
            expect(page.locator(".room")).to_have_count(2, timeout=10_000)
            expect(page.locator("#s-conn")).to_have_text("live")
            first = page.locator(".room").first
            expect(first).to_contain_text(catalog[7].name)
            expect(first).to_contain_text("viewers now: 1")
            expect(first).to_contain_text("SID ")
            # keyboard only: the viewer field, a number, Enter
            page.locator("#viewer").focus()
            page.keyboard.press("Control+A")
            page.keyboard.type("5")
            page.keyboard.press("Enter")
            expect(page.locator("#recs-onelive li")).to_have_count(len(expected_recs), timeout=10_000)
            shown = page.locator("#recs-onelive li").all_inner_texts()
            assert [t.split()[1] for t in shown] == [str(x["room"]) for x in expected_recs]
            assert [t.split()[1] for t in page.locator("#recs-popularity li").all_inner_texts()] == ["901", "900"]
            # ask the host in room 900: the answer streams in, with its latency
            page.locator(".room").first.click()
            page.locator("#question").fill("how much is it?")
            page.locator("#question").press("Enter")
            expect(page.locator(".msg.a .timing")).to_contain_text("total", timeout=30_000)
            assert page.locator(".msg.a .answer > div").last.inner_text() == answer.strip()
            page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
            # a phone: one column, nothing wider than the screen
            page.set_viewport_size({"width": 390, "height": 844})
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        finally:
            browser.close()
    assert errors == []
    assert (tmp_path / "console.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="no system chromium (apt install chromium)")
def test_the_console_asks_for_the_key_once_and_keeps_working_with_it(serve_config):
    from playwright.sync_api import expect, sync_playwright

    key = {"Authorization": "Bearer s3cret"}
    with Server(dataclasses.replace(serve_config, api_key="s3cret")) as srv:
        srv.wait_ready()
        assert httpx.post(srv.url + "/v1/events", json={"events": EVENTS}, headers=key).status_code == 200
        expected = httpx.post(srv.url + "/v1/recommend", json={"viewer": 5}, headers=key).json()["rooms"]
        prompts: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page()

                def answer(dialog) -> None:
                    prompts.append(dialog.message)
                    dialog.accept("s3cret")

                page.on("dialog", answer)
                page.goto(srv.url + "/")
                expect(page.locator(".room")).to_have_count(2, timeout=10_000)
                expect(page.locator("#s-conn")).to_have_text("live")
                page.locator("#viewer").fill("5")
                page.locator("#viewer").press("Enter")
                expect(page.locator("#recs-onelive li")).to_have_count(len(expected), timeout=10_000)
            finally:
                browser.close()
        assert len(prompts) == 1 and "API key" in prompts[0]  # asked once, for every call after
