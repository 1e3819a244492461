"""LiveThinking stage II: GRPO with TRL's GRPOTrainer on the multi-objective host reward.

The config names the rewards and their weights (non-negative, not all zero), how they combine
(`aggregation`, TRL's `multi_objective_aggregation`: `sum_then_normalize` or GDPO-style
`normalize_then_sum`), the loss (`dr_grpo`, `dapo`, `grpo`, `bnpo`, ...), reward scaling, group size,
KL coefficient and LoRA. Completions cut off at `max_tokens` are never rewarded as correct; with
`truncation: mask` they are also left out of the loss (TRL's `mask_truncated_completions`), with
`penalise` they stay in with their zero/negative rewards.

A reward function that raises stops the step with an error naming it — never a silent zero.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from livemind.align.objectives import AGGREGATIONS, check_weights
from livemind.errors import ConfigError, need
from livemind.think.distill import ModelSource
from livemind.think.prompts import messages
from livemind.think.rewards import REWARDS, BrevitySettings, build_rewards
from livemind.think.tasks import QATask, read_tasks, write_jsonl

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")


class RewardError(RuntimeError):
    """A reward function failed; the message names it."""


@dataclass(frozen=True)
class GRPOSettings:
    tasks: str = "runs/tasks/train.jsonl"
    student: ModelSource = field(default_factory=lambda: ModelSource(model="runs/rft/student"))
    rewards: dict[str, float] = field(default_factory=lambda: {"correctness": 1.0, "helpfulness": 0.5, "brevity": 0.5,
                                                               "format": 0.2})
    aggregation: Literal["sum_then_normalize", "normalize_then_sum"] = "sum_then_normalize"
    brevity: BrevitySettings = field(default_factory=BrevitySettings)
    truncation: Literal["mask", "penalise"] = "penalise"
    loss_type: str = "dr_grpo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    num_generations: int = 4  # group size G
    prompts_per_step: int = 2
    steps_per_generation: int = 4  # one generation reused for this many updates
    steps: int = 100
    max_tokens: int = 128
    temperature: float = 0.8
    beta: float = 0.0  # KL coefficient
    lr: float = 2e-4
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    limit: int | None = None  # first N tasks only
    seed: int = 0
    use_vllm: bool = False  # GPU: generate with vLLM (TRL's colocate or server mode)
    vllm_mode: Literal["colocate", "server"] = "colocate"
    gradient_checkpointing: bool = False  # on for large students on GPU

    def __post_init__(self) -> None:
        check_weights(self.rewards, REWARDS)
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"aggregation must be one of {list(AGGREGATIONS)}, got {self.aggregation!r}")
        if self.truncation not in ("mask", "penalise"):
            raise ConfigError(f"truncation must be 'mask' or 'penalise', got {self.truncation!r}")
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"loss_type must be one of {list(LOSS_TYPES)}, got {self.loss_type!r}")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ConfigError(f"scale_rewards must be 'group', 'batch' or 'none', got {self.scale_rewards!r}")
        if self.num_generations < 2:
            raise ConfigError(f"num_generations (group size) must be at least 2, got {self.num_generations}")
        if min(self.prompts_per_step, self.steps_per_generation, self.steps, self.max_tokens, self.lora_r) < 1:
            raise ConfigError("prompts_per_step, steps_per_generation, steps, max_tokens and lora_r must be at least 1")
        if self.temperature <= 0 or self.lr <= 0 or self.beta < 0:
            raise ConfigError(f"temperature and lr must be > 0 and beta >= 0, got {self.temperature}, {self.lr}, {self.beta}")
        if self.student.backend != "hf":
            raise ConfigError("the student is trained locally: student.backend must be 'hf'")


def guarded(fn: Callable[..., list[float | None]]) -> Callable[..., list[float | None]]:
    """The reward function with its failures re-raised as `RewardError` naming it."""
    name = getattr(fn, "__name__", type(fn).__name__)

    def call(*args: Any, **kwargs: Any) -> list[float | None]:
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:
            raise RewardError(f"reward function {name!r} failed: {type(exc).__name__}: {exc}") from exc
        if len(out) != len(kwargs.get("completions", args[1] if len(args) > 1 else out)):
            raise RewardError(f"reward function {name!r} returned {len(out)} values for a different number of completions")
        return out

    call.__name__ = name
    return call


def grpo_dataset(tasks: Sequence[QATask]):
    Dataset = need("datasets", "train", "GRPO").Dataset

    return Dataset.from_list([{"prompt": messages(t), "task": t.to_json()} for t in tasks])


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """A text's tokens in the student's tokenizer, special tokens left out (what brevity on the reasoning counts)."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def train_grpo(model: Any, tokenizer: Any, tasks: Sequence[QATask], cfg: GRPOSettings, out: str | Path,
               log: Callable[[str], None] = print, reward_funcs: Sequence[Callable] | None = None,
               max_steps: int | None = None) -> tuple[Any, list[dict[str, float]]]:
    """GRPO on `tasks`; returns the trained model and TRL's log history: one row per step, with a
    `rewards/<name>/mean` column per reward on the steps that generated (every
    `steps_per_generation`). `reward_funcs` overrides the config's (tests)."""
    import torch
    from transformers import TrainerCallback

    trl = need("trl", "train", "GRPO")
    GRPOConfig, GRPOTrainer = trl.GRPOConfig, trl.GRPOTrainer

    names = [n for n, w in cfg.rewards.items() if w > 0] if reward_funcs is None else None
    funcs = build_rewards(names, cfg.brevity, cfg.max_tokens, token_counter(tokenizer)) if reward_funcs is None \
        else list(reward_funcs)
    weights = [cfg.rewards[n] for n in names] if names is not None else [1.0] * len(funcs)
    steps = max_steps if max_steps is not None else cfg.steps
    args = GRPOConfig(
        output_dir=str(out), max_steps=steps, learning_rate=cfg.lr, seed=cfg.seed, logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available(),
        gradient_checkpointing=cfg.gradient_checkpointing, use_vllm=cfg.use_vllm, vllm_mode=cfg.vllm_mode,
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations, num_generations=cfg.num_generations,
        steps_per_generation=cfg.steps_per_generation, max_completion_length=cfg.max_tokens,
        temperature=cfg.temperature, top_p=1.0, beta=cfg.beta, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards,
        reward_weights=weights, multi_objective_aggregation=cfg.aggregation,
        mask_truncated_completions=cfg.truncation == "mask", dataloader_num_workers=0, shuffle_dataset=True,
    )
    peft_config = None
    if cfg.lora:
        LoraConfig = need("peft", "train", "LoRA").LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    t0 = time.perf_counter()

    class Progress(TrainerCallback):
        def on_log(self, _args, state, _control, logs=None, **_):
            if not logs or "loss" not in logs:
                return
            if "reward" in logs:  # a step that generated (every steps_per_generation steps)
                rewards = "  ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in logs.items()  # None: no answer it applies to
                                    if k.startswith("rewards/") and k.endswith("/mean") and v is not None)
                detail = (f"reward {logs['reward']:.3f}  {rewards}  "
                          f"length {logs.get('completions/mean_length', float('nan')):.0f}")
            else:
                detail = "(update on the last generation)"
            log(f"\nstep {state.global_step}/{steps}  {detail}  {time.perf_counter() - t0:.0f} s")

    trainer = GRPOTrainer(model=model, reward_funcs=[guarded(f) for f in funcs], args=args, train_dataset=grpo_dataset(tasks),
                          processing_class=tokenizer, peft_config=peft_config, callbacks=[Progress()])
    trainer.train()
    history = [h for h in trainer.state.log_history if "loss" in h]  # one row per step; rewards on generating steps
    return trainer.model, history


def run_grpo(cfg: GRPOSettings, out: str | Path, log: Callable[[str], None] = print, max_steps: int | None = None,
             float_cache: str | Path | None = "runs/cache/models") -> dict:
    """`livemind think grpo`: train, save the (merged) student to OUT/student and the per-step log
    to OUT/history.jsonl."""
    from livemind.think.backends import load_causal_lm

    out = Path(out)
    tasks = read_tasks(cfg.tasks)
    tasks = tasks[:cfg.limit] if cfg.limit else tasks
    if not tasks:
        raise ConfigError(f"{cfg.tasks} holds no tasks")
    tok, model = load_causal_lm(cfg.student.model, cfg.student.gguf_file, float_cache)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    t0 = time.perf_counter()
    model, history = train_grpo(model, tok, tasks, cfg, out / "grpo_run", log, max_steps=max_steps)
    seconds = time.perf_counter() - t0
    if cfg.lora:
        model = model.merge_and_unload()
    model.save_pretrained(out / "student")
    tok.save_pretrained(out / "student")
    write_jsonl(history, out / "history.jsonl")
    (out / "grpo.json").write_text(json.dumps({"config": asdict(cfg), "seconds": seconds, "steps": len(history)},
                                              indent=2, default=str))
    log(f"GRPO: {len(history)} steps in {seconds / 60:.1f} min; student saved to {out / 'student'}")
    return {"history": history, "seconds": seconds}
