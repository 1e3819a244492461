"""Training recipe for the OneLive generator: setup, train, save_checkpoint, cleanup.

- Data order is a function of (seed, epoch), so a resumed run sees exactly the batches the
  uninterrupted run would have seen.
- A checkpoint is `model.safetensors` + `optimizer.safetensors` (AdamW moments, steps, torch RNG)
  + `state.json` (epoch, step, losses, configs, tokenizer version). Resuming checks that the data
  was tokenised by the same tokenizer version and refuses otherwise.
- With a live-room prior (`room_loss` > 0, `GeneratorConfig.room_signals` > 0) the loss adds
  `room_loss` x the cross-entropy of the watched room among the rooms live at its time, scored
  by log P(SID) + the prior of their identity signals (`livemind.rec.data.room_signals`).
- Under `torchrun --nproc-per-node N` (WORLD_SIZE > 1) the model is wrapped in
  DistributedDataParallel (gloo on CPU, nccl on GPU) and each rank takes every N-th batch row;
  only rank 0 writes checkpoints.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from livemind.errors import DataError
from livemind.rec.data.room_signals import SIGNALS, RoomBatch, RoomSignals
from livemind.rec.data.watch import History, WatchLog
from livemind.rec.live.rooms import LiveRooms
from livemind.rec.model.checkpoint import load_tensors, read_state, save_generator, save_tensors, saved_generator_config
from livemind.rec.model.generator import GeneratorConfig, OneLiveGenerator
from livemind.rec.model.prior import MAX_REFIT_ENTRIES, fit_room_prior
from livemind.report import figure


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
    room_loss: float = 0.0  # weight of the softmax over live rooms (log P(SID) + live-room prior); 0 = off
    room_negatives: int = 31  # other live rooms sampled per target for that softmax
    prior_holdout_hours: float = 6.0  # latest training targets held out to refit the prior on (fit_room_prior)
    prior_holdout_share: float = 0.1  # ... and at least this share of them (the latest), when those hours hold fewer
    prior_refit_entries: int = MAX_REFIT_ENTRIES  # (request, live room) entries the refit reads at most (refit_rows)
    causal_history: bool = False  # histories and signals read only watches strictly before the target's time
    prior_joint: bool = True  # train the live-room prior with the generator; False: the generator alone, then the fit
    device: str = "cpu"  # cpu, cuda or cuda:N; under torchrun, "cuda" puts each rank on cuda:LOCAL_RANK

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError(f"epochs, batch_size and checkpoint_every must be >= 1, got "
                             f"{self.epochs}, {self.batch_size}, {self.checkpoint_every}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.prior_holdout_hours < 0:
            raise ValueError(f"prior_holdout_hours must be non-negative, got {self.prior_holdout_hours}")
        if self.prior_refit_entries < 1:
            raise ValueError(f"prior_refit_entries must be >= 1, got {self.prior_refit_entries}")
        if not 0 <= self.prior_holdout_share < 1:
            raise ValueError(f"prior_holdout_share must be in [0, 1), got {self.prior_holdout_share}")
        if not (self.device == "cpu" or self.device.startswith(("cuda", "mps"))):
            raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.room_negatives < 1:
            raise ValueError(f"room_negatives must be at least 1, got {self.room_negatives}")
        if self.room_loss < 0:
            raise ValueError(f"room_loss must be non-negative, got {self.room_loss}")
        if self.generator.room_signals not in (0, len(SIGNALS)):
            raise ValueError(f"generator.room_signals must be 0 or {len(SIGNALS)} ({', '.join(SIGNALS)}), "
                             f"got {self.generator.room_signals}")
        if self.generator.room_signals and not self.room_loss:
            raise ValueError("a generator with a live-room prior (room_signals) trains it by room_loss > 0")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices and embeddings only; none on norms, biases and scalars
    (decaying a norm's gain or a bias toward 0 only fights the model, as nanoGPT notes)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class Objective(torch.nn.Module):
    """The training loss as one module, so that DistributedDataParallel wraps everything it runs."""

    def __init__(self, model: OneLiveGenerator, room_loss: float, prior_joint: bool = True) -> None:
        super().__init__()
        self.model, self.room_loss, self.prior_joint = model, room_loss, prior_joint

    def forward(self, hist: History, target: torch.Tensor, allowed: torch.Tensor | None,
                rooms: RoomBatch | None) -> torch.Tensor:
        enc = self.model.encode(hist) if rooms is not None and self.model.cfg.decode == "mtp" else None
        loss, _ = self.model.weighted_loss(self.model(hist, target, enc), target, allowed)
        if rooms is not None:  # the room softmax reads the same encoding of the histories
            dev = self.model.device
            target_room, mask = rooms.target.to(dev), rooms.mask.to(dev)
            ok = target_room >= 0  # the watched room is live with a segment (always, for a world's log)
            if self.prior_joint or not self.model.cfg.room_signals:
                scores = self.model.room_scores(hist, rooms.codes, rooms.signals, enc)
            else:  # the generator alone ranks the rooms here; its prior is fit afterwards (fit_room_prior)
                scores = self.model.sid_log_prob(hist, rooms.codes, enc)
            scores = scores.masked_fill(~mask, float("-inf"))
            loss = loss + self.room_loss * F.cross_entropy(scores[ok], target_room[ok])
        return loss


class GeneratorTrainer:
    def __init__(self, cfg: TrainConfig, log: WatchLog, rows: np.ndarray, out_dir: str | Path,
                 live: LiveRooms | None = None, code_vectors: np.ndarray | None = None,
                 signals: RoomSignals | None = None) -> None:
        if cfg.live_softmax and live is None:
            raise ValueError("live_softmax needs the live rooms (live=LiveRooms(...)) of the log's world")
        if cfg.room_loss and signals is None:
            raise ValueError("room_loss needs the live rooms' identity signals (signals=RoomSignals(...))")
        self.signals = signals
        if cfg.generator.code_dim and code_vectors is None:
            raise ValueError("code_dim > 0 needs the tokenizer's codebook centroids (code_vectors=...)")
        self.code_vectors = code_vectors
        self.cfg, self.log, self.rows, self.out, self.live = cfg, log, np.asarray(rows), Path(out_dir), live
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.losses: list[float] = []
        self.prior_fit: tuple[float, float] | None = None  # set once the live-room prior is refit (saved)

    # ------------------------------------------------------------------------------- setup

    def setup(self, resume: bool = True) -> None:
        torch.manual_seed(self.cfg.seed)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(f"cuda:{local}" if self.cfg.device == "cuda" and self.world > 1 else self.cfg.device)
        self.model = OneLiveGenerator(self.cfg.generator).to(self.device)
        if self.cfg.generator.code_dim:
            self.model.set_code_vectors(torch.from_numpy(np.asarray(self.code_vectors)))
        self.opt = torch.optim.AdamW(param_groups(self.model, self.cfg.weight_decay), lr=self.cfg.lr,
                                     fused=True)  # one kernel per step, not one per parameter
        if resume and (self.out / "state.json").is_file():
            self._load()
        self.objective = Objective(self.model, self.cfg.room_loss, self.cfg.prior_joint)
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = torch.nn.parallel.DistributedDataParallel(self.objective, device_ids=ids) if self.world > 1 else None

    def _load(self) -> None:
        state = read_state(self.out)
        if state["tokenizer_version"] != self.log.tokenizer_version:
            raise DataError(f"checkpoint {self.out} was trained on tokenizer {state['tokenizer_version']}, "
                            f"the data is tokenised by {self.log.tokenizer_version}")
        if saved_generator_config(self.out) != self.cfg.generator:
            raise DataError(f"checkpoint {self.out} has another generator config: {state['generator']}")
        self.model.load_state_dict(load_tensors(self.out / "model.safetensors"))
        tensors = load_tensors(self.out / "optimizer.safetensors")
        opt_state = self.opt.state_dict()
        for i in (i for group in opt_state["param_groups"] for i in group["params"]):
            opt_state["state"][i] = {k: tensors[f"{i}.{k}"] for k in ("step", "exp_avg", "exp_avg_sq")}
        self.opt.load_state_dict(opt_state)
        torch.set_rng_state(tensors["torch_rng"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.losses = state["global_step"], state["losses"]
        self.prior_fit = tuple(state["prior_fit"]) if state.get("prior_fit") else None

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
        module = self.ddp or self.objective
        done = 0
        self.model.train()
        while self.epoch < self.cfg.epochs:
            order = self._order(self.epoch)
            while self.step_in_epoch < steps_per_epoch:
                if max_steps is not None and done >= max_steps:
                    return self.losses
                batch = order[self.step_in_epoch * bs:(self.step_in_epoch + 1) * bs][self.rank::self.world]
                hist, target = self.log.batch(batch, H, causal=self.cfg.causal_history)
                allowed = None
                if self.cfg.live_softmax:
                    allowed = torch.from_numpy(self.live.allowed(self.log.time[batch], target.numpy(),
                                                                 self.cfg.generator.codebook_size))
                rooms = None
                if self.cfg.room_loss:  # negatives drawn from (seed, step): a resumed run draws the same
                    rooms = self.signals.batch(batch, self.cfg.room_negatives,
                                               np.random.default_rng([self.cfg.seed, self.global_step]),
                                               causal=self.cfg.causal_history)
                loss = module(hist, target, allowed, rooms)  # module: DDP-wrapped when distributed
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
        tensors = {"torch_rng": torch.get_rng_state()}
        for i, st in self.opt.state_dict()["state"].items():
            for k, v in st.items():
                tensors[f"{i}.{k}"] = v.detach() if torch.is_tensor(v) else torch.tensor(v, device="cpu")
        save_tensors(tensors, self.out / "optimizer.safetensors")
        save_generator(self.model, self.out, self.log.tokenizer_version, epoch=self.epoch,
                       step_in_epoch=self.step_in_epoch, global_step=self.global_step, losses=self.losses,
                       train=_train_settings(self.cfg),
                       prior_fit=self.prior_fit)

    def cleanup(self) -> None:
        if dist.is_initialized():
            dist.barrier()  # let rank 0 finish its checkpoint before the group goes away
            dist.destroy_process_group()


@dataclass
class TrainResult:
    model: OneLiveGenerator
    losses: list[float]
    seconds: float  # wall time of the steps run in this call
    samples: int  # training examples processed in this call
    prior_fit: tuple[float, float] | None = None  # held-out room cross-entropy before / after refitting the prior

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("nan")


def same_training(directory: str | Path, cfg: TrainConfig) -> bool:
    """Whether the checkpoint in `directory` was trained by `cfg` (its architecture and its training
    settings, the prior's holdout included): a cache that may be resumed rather than retrained."""
    if saved_generator_config(directory) != cfg.generator:
        return False
    return read_state(directory).get("train") == _train_settings(cfg)


def _train_settings(cfg: TrainConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k != "generator"}


def prior_holdout(cfg: TrainConfig, log: WatchLog, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) for a generator with a live-room prior: the targets of the last
    `prior_holdout_hours`, or the latest `prior_holdout_share` of them when those hours hold fewer, are
    held out to refit the prior on (`fit_room_prior`); none without a prior or with neither set.

    A few dozen rows cannot calibrate the prior: on the demo world the last 6 hours held 61 of 6,216
    targets, and the refit, fitting them almost exactly (room cross-entropy 0.94 -> 0.16), put a weight
    of 7.9 on one SID level and ranked the held-out day under popularity (MRR 0.297 vs 0.372); with
    the latest 10% (622) it ranks over it (0.432; docs/history.md).
    """
    rows = np.asarray(rows)
    if not (cfg.room_loss and cfg.generator.room_signals) or not (cfg.prior_holdout_hours or cfg.prior_holdout_share):
        return rows, np.zeros(0, dtype=np.int64)
    t = log.time[rows]
    cut = t.max() - cfg.prior_holdout_hours * 3600.0
    if cfg.prior_holdout_share and len(rows):
        cut = min(cut, float(np.quantile(t, 1.0 - cfg.prior_holdout_share, method="higher")))
    late = t >= cut
    return rows[~late], rows[late]


def train_generator(cfg: TrainConfig, log: WatchLog, rows: np.ndarray, out: str | Path, resume: bool = True,
                    progress: Callable[[int, int], None] | None = None, live: LiveRooms | None = None,
                    code_vectors: np.ndarray | None = None, signals: RoomSignals | None = None) -> TrainResult:
    """Train (or resume) into `out`; writes the checkpoint, `losses.csv` and `loss.png` there.

    `code_vectors`: the tokenizer's codebook centroids (L, K, D), needed when the generator reads
    semantic codes (`code_dim` > 0). `signals`: the live rooms' identity signals, needed with a
    live-room prior (`room_loss` > 0). With one, the latest targets of `rows` (`prior_holdout`)
    are held out of training, and the prior is refit on them once training ends
    (`fit_room_prior`), then saved with the checkpoint; resuming a finished, refit checkpoint
    neither trains nor refits again.
    """
    rows, held = prior_holdout(cfg, log, rows)
    trainer = GeneratorTrainer(cfg, log, rows, out, live, code_vectors, signals)
    trainer.setup(resume=resume)
    before = trainer.global_step
    t0 = time.perf_counter()
    try:
        losses = trainer.train(progress=progress)
    finally:
        trainer.cleanup()
    seconds = time.perf_counter() - t0
    if trainer.global_step != before:
        trainer.prior_fit = None  # trained further: the refit is stale
    if len(held) and trainer.rank == 0 and trainer.prior_fit is None:
        trainer.prior_fit = fit_room_prior(trainer.model, signals, held, causal=cfg.causal_history,
                                           max_entries=cfg.prior_refit_entries)
        trainer.save_checkpoint()
    if trainer.rank == 0:
        write_loss_curve(Path(out), losses, title=f"generator ({cfg.generator.decode}) training loss",
                         ylabel="SID + live-room cross-entropy" if cfg.room_loss else "weighted SID cross-entropy")
    return TrainResult(trainer.model.eval(), losses, seconds, (trainer.global_step - before) * cfg.batch_size,
                       trainer.prior_fit)


def write_loss_curve(out: Path, losses: list[float], title: str, smooth: int = 20,
                     ylabel: str = "weighted SID cross-entropy") -> None:
    """`losses.csv` (step, loss) and `loss.png` (raw and a running mean) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "losses.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss"])
        w.writerows((i + 1, f"{v:.6f}") for i, v in enumerate(losses))
    with figure(out / "loss.png") as (_, ax):
        steps = np.arange(1, len(losses) + 1)
        ax.plot(steps, losses, alpha=0.35, label="loss")
        if len(losses) >= smooth:
            ax.plot(steps[smooth - 1:], np.convolve(losses, np.ones(smooth) / smooth, mode="valid"),
                    label=f"mean of {smooth}")
        ax.set(xlabel="step", ylabel=ylabel, title=title)
        ax.legend()
