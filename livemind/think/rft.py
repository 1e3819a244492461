"""Rejection-sampling fine-tuning (LiveThinking stage I): sample K reasoning traces per question
from a teacher, judge them, keep the accepted ones by a selection rule, and fine-tune the student
on them with TRL's SFTTrainer (LoRA through PEFT optional).

Selection rules (`select`): `all` keeps every accepted trace; `shortest` keeps the shortest
accepted trace of each question (a head start on brevity); `most_helpful` keeps the accepted trace
with the highest helpfulness (ties: shorter). Unknown verdicts are never accepted.
The SFT set is prompt/completion chat data: the prompt is `prompts.messages(task)`, the completion
the reasoning inside <think>…</think> followed by the answer; the loss is on the completion only.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livemind.errors import ConfigError, need
from livemind.think.backends import Backend, Completion, Sampling
from livemind.think.judge import Judgement, rule_judge
from livemind.think.prompts import messages, split_reasoning, target
from livemind.think.tasks import QATask
from livemind.think.verify import sentences

SELECTIONS = ("all", "shortest", "most_helpful")


@dataclass(frozen=True)
class SFTSettings:
    epochs: float = 2.0
    lr: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 768
    lora: bool = True  # PEFT LoRA on the attention and MLP projections
    lora_r: int = 16
    lora_alpha: int = 32
    seed: int = 0
    bf16: bool = False  # bfloat16 autocast (on a GPU the usual; on these CPU cores the LoRA steps gained little)

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.lr <= 0 or self.batch_size < 1 or self.grad_accum < 1 or self.lora_r < 1:
            raise ValueError(f"epochs, lr > 0 and batch_size, grad_accum, lora_r >= 1 expected, got {asdict(self)}")


@dataclass
class Trace:
    task: QATask
    completion: Completion
    judgement: Judgement
    truncated: bool = False  # cut off at the token limit: an unfinished answer is never kept

    @property
    def accepted(self) -> bool:
        return self.judgement.correct is True and self.completion.text is not None and not self.truncated


def sample_traces(tasks: Sequence[QATask], teacher: Backend, sampling: Sampling,
                  judge: Callable[[QATask, str], Judgement] = rule_judge) -> list[Trace]:
    """K = sampling.n completions per task from the teacher, each judged. Failed requests are kept
    as rejected traces (recorded, not retried here: the backend's cache retries them next run), and
    so are answers cut off at `sampling.max_tokens`."""
    out = []
    for task, row in zip(tasks, teacher.generate([messages(t) for t in tasks], sampling)):
        for c in row:
            out.append(Trace(task, c, judge(task, c.text) if c.text is not None else Judgement(None, None),
                             c.cut_off(sampling.max_tokens)))
    return out


def reference_traces(tasks: Sequence[QATask], samples: int, count_tokens: Callable[[str], int], keep: float = 0.7,
                     judge: Callable[[QATask, str], Judgement] = rule_judge) -> list[Trace]:
    """The tasks' worked solutions as teacher traces, judged like any teacher's: sample 0 is the
    full reference; sample i > 0 keeps each reasoning sentence with probability `keep` (seeded by
    task id and i), so the traces vary in length as a sampled teacher's do. Offline stand-in for a
    reasoning teacher; a task without a reference is an error.

    >>> from livemind.think.tasks import QATask
    >>> t = QATask("1", "price", ("Mug. 9.00 each.",), "how much?", {"number": 9.0},
    ...            reference="<think>Mug. Listed at 9.00. No discount.</think>It's 9.00.")
    >>> [(x.completion.text, x.completion.tokens, x.accepted) for x in reference_traces([t], 2, lambda s: len(s.split()), keep=0.0)]
    [("<think>\\nMug. Listed at 9.00. No discount.\\n</think>\\nIt's 9.00.", 10, True), ("<think>\\n\\n</think>\\nIt's 9.00.", 4, True)]
    """
    if not 0 <= keep <= 1 or samples < 1:
        raise ConfigError(f"keep must be in [0, 1] and samples at least 1, got {keep} and {samples}")
    out = []
    for task in tasks:
        if not task.reference:
            raise ConfigError(f"task {task.id!r} has no reference solution; the reference teacher needs generated tasks")
        reasoning, answer = split_reasoning(task.reference)
        steps = sentences(reasoning)
        for i in range(samples):
            rng = np.random.default_rng([zlib.crc32(task.id.encode()), i])
            kept = steps if i == 0 else [s for s in steps if "[[" in s or rng.random() < keep]  # calculations stay
            text = target(" ".join(kept), answer)
            out.append(Trace(task, Completion(text, count_tokens(text)), judge(task, text)))
    return out


def select(traces: Sequence[Trace], rule: str) -> list[Trace]:
    if rule not in SELECTIONS:
        raise ConfigError(f"selection must be one of {list(SELECTIONS)}, got {rule!r}")
    by_task: dict[str, list[Trace]] = defaultdict(list)
    for t in traces:
        if t.accepted:
            by_task[t.task.id].append(t)
    if rule == "all":
        return [t for group in by_task.values() for t in group]
    if rule == "shortest":
        return [min(g, key=lambda t: t.completion.tokens) for g in by_task.values()]
    return [max(g, key=lambda t: (t.judgement.helpful or 0.0, -t.completion.tokens)) for g in by_task.values()]


def accept_report(traces: Sequence[Trace]) -> dict[str, dict[str, float]]:
    """Per task kind (and `all`): traces, accept rate, failed requests, mean tokens of accepted ones."""
    groups: dict[str, list[Trace]] = defaultdict(list)
    for t in traces:
        groups[t.task.kind].append(t)
        groups["all"].append(t)
    out = {}
    for kind, ts in sorted(groups.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        acc = [t for t in ts if t.accepted]
        out[kind] = {"traces": len(ts), "accept_rate": len(acc) / len(ts),
                     "failed": sum(t.completion.text is None for t in ts),
                     "tokens_accepted": sum(t.completion.tokens for t in acc) / len(acc) if acc else float("nan")}
    return out


def sft_records(traces: Sequence[Trace]) -> list[dict[str, Any]]:
    """TRL conversational prompt/completion rows."""
    rows = []
    for t in traces:
        reasoning, answer = split_reasoning(t.completion.text or "")
        rows.append({"prompt": messages(t.task), "completion": [{"role": "assistant", "content": target(reasoning, answer)}],
                     "task_id": t.task.id, "kind": t.task.kind})
    return rows


def finetune(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], settings: SFTSettings, out: str | Path,
             max_steps: int = -1) -> tuple[Any, list[float]]:
    """SFT with TRL on CPU (fp32) or GPU; returns the trained model and the logged training losses."""
    Dataset = need("datasets", "train", "SFT").Dataset
    trl = need("trl", "train", "SFT")
    SFTConfig, SFTTrainer = trl.SFTConfig, trl.SFTTrainer

    if not rows:
        raise ConfigError("no accepted traces to fine-tune on (accept rate 0): check the teacher and the judge")
    import torch

    cfg = SFTConfig(
        output_dir=str(out), num_train_epochs=settings.epochs, max_steps=max_steps, learning_rate=settings.lr,
        per_device_train_batch_size=settings.batch_size, gradient_accumulation_steps=settings.grad_accum,
        max_length=settings.max_length, logging_steps=1, save_strategy="no", report_to="none", seed=settings.seed,
        use_cpu=not torch.cuda.is_available(), bf16=settings.bf16, gradient_checkpointing=False, completion_only_loss=True,
        dataloader_num_workers=0,
    )
    peft_config = None
    if settings.lora:
        LoraConfig = need("peft", "train", "LoRA").LoraConfig

        peft_config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    # a mixture of experts trains with its load-balancing loss (router logits on) and is saved for
    # inference without it (on in generate, Mixtral's loss breaks on padded batches)
    moe = bool(getattr(model.config, "num_local_experts", None) or getattr(model.config, "num_experts", None))
    if moe:
        model.config.output_router_logits = True
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=data, processing_class=tokenizer, peft_config=peft_config)
    if len(trainer.train_dataset) == 0:
        raise ConfigError(f"all {len(rows)} SFT examples lost their completion to truncation at max_length="
                          f"{settings.max_length} tokens; raise max_length")
    trainer.train()
    if moe:
        trainer.model.config.output_router_logits = False
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return trainer.model, losses
