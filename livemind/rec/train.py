"""Training recipe for the OneLive generator: setup, train, save_checkpoint, cleanup.

- Data order is a function of (seed, epoch), so a resumed run sees exactly the batches the
  uninterrupted run would have seen.
- A checkpoint is `model.safetensors` + `optimizer.safetensors` (AdamW moments, steps, torch RNG)
  + `state.json` (epoch, step, losses, configs, tokenizer version). Resuming checks that the data
  was tokenised by the same tokenizer version and refuses otherwise.
- Under `torchrun --nproc-per-node N` (WORLD_SIZE > 1) the model is wrapped in
  DistributedDataParallel (gloo on CPU, nccl on GPU) and each rank takes every N-th batch row;
  only rank 0 writes checkpoints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from livemind.config import from_dict
from livemind.errors import DataError
from livemind.rec.data import WatchLog
from livemind.rec.evaluate import LiveRooms
from livemind.rec.generator import GeneratorConfig, OneLiveGenerator

FORMAT = "livemind-generator-ckpt/1"


@dataclass(frozen=True)
class TrainConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.01
    seed: int = 0
    checkpoint_every: int = 200  # steps; a checkpoint is also written at the end
    live_softmax: bool = False  # each level's softmax over the codes of rooms live at the target's time

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError(f"epochs, batch_size and checkpoint_every must be >= 1, got "
                             f"{self.epochs}, {self.batch_size}, {self.checkpoint_every}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


class GeneratorTrainer:
    def __init__(self, cfg: TrainConfig, log: WatchLog, rows: np.ndarray, out_dir: str | Path,
                 live: LiveRooms | None = None, code_vectors: np.ndarray | None = None) -> None:
        if cfg.live_softmax and live is None:
            raise ValueError("live_softmax needs the live rooms (live=LiveRooms(...)) of the log's world")
        if cfg.generator.code_dim and code_vectors is None:
            raise ValueError("code_dim > 0 needs the tokenizer's codebook centroids (code_vectors=...)")
        self.code_vectors = code_vectors
        self.cfg, self.log, self.rows, self.out, self.live = cfg, log, np.asarray(rows), Path(out_dir), live
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.losses: list[float] = []

    # ------------------------------------------------------------------------------- setup

    def setup(self, resume: bool = True) -> None:
        torch.manual_seed(self.cfg.seed)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.model = OneLiveGenerator(self.cfg.generator)
        if self.cfg.generator.code_dim:
            self.model.set_code_vectors(torch.from_numpy(np.asarray(self.code_vectors)))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        if resume and (self.out / "state.json").is_file():
            self._load()
        self.ddp = torch.nn.parallel.DistributedDataParallel(self.model) if self.world > 1 else None

    def _load(self) -> None:
        state = json.loads((self.out / "state.json").read_text())
        if state.get("format") != FORMAT:
            raise DataError(f"{self.out}/state.json: format {state.get('format')!r}, expected {FORMAT!r}")
        if state["tokenizer_version"] != self.log.tokenizer_version:
            raise DataError(f"checkpoint {self.out} was trained on tokenizer {state['tokenizer_version']}, "
                            f"the data is tokenised by {self.log.tokenizer_version}")
        if saved_generator_config(self.out) != self.cfg.generator:
            raise DataError(f"checkpoint {self.out} has another generator config: {state['generator']}")
        self.model.load_state_dict(load_file(str(self.out / "model.safetensors")))
        tensors = load_file(str(self.out / "optimizer.safetensors"))
        opt_state = self.opt.state_dict()
        for i in opt_state["param_groups"][0]["params"]:
            opt_state["state"][i] = {k: tensors[f"{i}.{k}"] for k in ("step", "exp_avg", "exp_avg_sq")}
        self.opt.load_state_dict(opt_state)
        torch.set_rng_state(tensors["torch_rng"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.losses = state["global_step"], state["losses"]

    # ------------------------------------------------------------------------------- train

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.cfg.seed, epoch]).permutation(self.rows)

    def train(self, max_steps: int | None = None, progress: Callable[[int, int], None] | None = None) -> list[float]:
        """Train until the configured epochs end (or `max_steps` more steps); returns all losses."""
        bs, H = self.cfg.batch_size, self.cfg.generator.max_history
        steps_per_epoch = len(self.rows) // bs
        if steps_per_epoch == 0:
            raise DataError(f"{len(self.rows)} training examples are fewer than one batch of {bs}")
        total = steps_per_epoch * self.cfg.epochs
        module = self.ddp or self.model
        done = 0
        self.model.train()
        while self.epoch < self.cfg.epochs:
            order = self._order(self.epoch)
            while self.step_in_epoch < steps_per_epoch:
                if max_steps is not None and done >= max_steps:
                    return self.losses
                batch = order[self.step_in_epoch * bs:(self.step_in_epoch + 1) * bs][self.rank::self.world]
                hist, target = self.log.batch(batch, H)
                allowed = None
                if self.cfg.live_softmax:
                    allowed = torch.from_numpy(self.live.allowed(self.log.time[batch], target.numpy(),
                                                                 self.cfg.generator.codebook_size))
                loss, _ = self.model.weighted_loss(module(hist, target), target, allowed)  # module: DDP-wrapped when distributed
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                self.losses.append(loss.item())
                self.step_in_epoch += 1
                self.global_step += 1
                done += 1
                if self.global_step % self.cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if progress:
                    progress(self.global_step, total)
            self.epoch += 1
            self.step_in_epoch = 0
        self.save_checkpoint()
        return self.losses

    def save_checkpoint(self) -> None:
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(self.out / "model.safetensors"))
        tensors = {"torch_rng": torch.get_rng_state()}
        for i, st in self.opt.state_dict()["state"].items():
            for k, v in st.items():
                tensors[f"{i}.{k}"] = torch.as_tensor(v).contiguous()
        save_file(tensors, str(self.out / "optimizer.safetensors"))
        state = {"format": FORMAT, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                 "global_step": self.global_step, "losses": self.losses, "tokenizer_version": self.log.tokenizer_version,
                 "generator": asdict(self.cfg.generator), "train": {k: v for k, v in asdict(self.cfg).items() if k != "generator"}}
        tmp = self.out / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(self.out / "state.json")  # the state file appears only once the tensors are written

    def cleanup(self) -> None:
        if dist.is_initialized():
            dist.barrier()  # let rank 0 finish its checkpoint before the group goes away
            dist.destroy_process_group()


def saved_generator_config(directory: str | Path) -> GeneratorConfig | None:
    """The architecture of the generator checkpoint in `directory`, None when there is none."""
    path = Path(directory) / "state.json"
    return from_dict(GeneratorConfig, json.loads(path.read_text())["generator"]) if path.is_file() else None


def load_generator(directory: str | Path, tokenizer_version: str) -> OneLiveGenerator:
    """The trained model of a checkpoint directory, refusing one of another tokenizer version."""
    directory = Path(directory)
    path = directory / "state.json"
    if not path.is_file():
        raise DataError(f"{directory}: no state.json; not a generator checkpoint")
    state = json.loads(path.read_text())
    if state["tokenizer_version"] != tokenizer_version:
        raise DataError(f"generator checkpoint {directory} was trained on tokenizer {state['tokenizer_version']}, "
                        f"the live index uses {tokenizer_version}")
    model = OneLiveGenerator(from_dict(GeneratorConfig, state["generator"]))
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    return model.eval()
