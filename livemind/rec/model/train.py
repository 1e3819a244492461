"""Training recipe for the OneLive generator: setup, train, save_checkpoint, cleanup.

- Data order is a function of (seed, epoch), so a resumed run sees exactly the batches the
  uninterrupted run would have seen.
- A checkpoint is `model.safetensors` + `optimizer.safetensors` (AdamW moments, steps, torch RNG)
  + `state.json` (epoch, step, losses, configs, tokenizer version). Resuming checks that the data
  was tokenised by the same tokenizer version and refuses otherwise.
- With a live-room prior (`room_loss` > 0, `GeneratorConfig.room_signals` > 0) the loss adds
  `room_loss` x the cross-entropy of the watched room among the rooms live at its time, scored
  by log P(SID) + the prior of their identity signals (`livemind.rec.room_signals`).
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
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from livemind.config import from_dict
from livemind.errors import DataError
from livemind.rec.data import WatchLog
from livemind.rec.evaluate import LiveRooms
from livemind.rec.generator import GeneratorConfig, History, OneLiveGenerator
from livemind.rec.room_signals import SIGNALS, RoomBatch, RoomSignals

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
    room_loss: float = 0.0  # weight of the softmax over live rooms (log P(SID) + live-room prior); 0 = off
    room_negatives: int = 31  # other live rooms sampled per target for that softmax
    prior_holdout_hours: float = 6.0  # latest training targets held out to refit the prior on (fit_room_prior)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError(f"epochs, batch_size and checkpoint_every must be >= 1, got "
                             f"{self.epochs}, {self.batch_size}, {self.checkpoint_every}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.prior_holdout_hours < 0:
            raise ValueError(f"prior_holdout_hours must be non-negative, got {self.prior_holdout_hours}")
        if self.room_negatives < 1:
            raise ValueError(f"room_negatives must be at least 1, got {self.room_negatives}")
        if self.room_loss < 0:
            raise ValueError(f"room_loss must be non-negative, got {self.room_loss}")
        if self.room_loss and self.generator.room_signals != len(SIGNALS):
            raise ValueError(f"room_loss needs generator.room_signals = {len(SIGNALS)} ({', '.join(SIGNALS)}), "
                             f"got {self.generator.room_signals}")


class Objective(torch.nn.Module):
    """The training loss as one module, so that DistributedDataParallel wraps everything it runs."""

    def __init__(self, model: OneLiveGenerator, room_loss: float) -> None:
        super().__init__()
        self.model, self.room_loss = model, room_loss

    def forward(self, hist: History, target: torch.Tensor, allowed: torch.Tensor | None,
                rooms: RoomBatch | None) -> torch.Tensor:
        enc = self.model.encode(hist) if rooms is not None and self.model.cfg.decode == "mtp" else None
        loss, _ = self.model.weighted_loss(self.model(hist, target, enc), target, allowed)
        if rooms is not None:  # the room softmax reads the same encoding of the histories
            ok = rooms.target >= 0  # the watched room is live with a segment (always, for a world's log)
            scores = self.model.room_scores(hist, rooms.codes, rooms.signals, enc).masked_fill(~rooms.mask, float("-inf"))
            loss = loss + self.room_loss * F.cross_entropy(scores[ok], rooms.target[ok])
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
        self.model = OneLiveGenerator(self.cfg.generator)
        if self.cfg.generator.code_dim:
            self.model.set_code_vectors(torch.from_numpy(np.asarray(self.code_vectors)))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay,
                                     fused=True)  # one kernel per step, not one per parameter
        if resume and (self.out / "state.json").is_file():
            self._load()
        self.objective = Objective(self.model, self.cfg.room_loss)
        self.ddp = torch.nn.parallel.DistributedDataParallel(self.objective) if self.world > 1 else None

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
                hist, target = self.log.batch(batch, H)
                allowed = None
                if self.cfg.live_softmax:
                    allowed = torch.from_numpy(self.live.allowed(self.log.time[batch], target.numpy(),
                                                                 self.cfg.generator.codebook_size))
                rooms = None
                if self.cfg.room_loss:  # negatives drawn from (seed, step): a resumed run draws the same
                    rooms = self.signals.batch(batch, self.cfg.room_negatives,
                                               np.random.default_rng([self.cfg.seed, self.global_step]))
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
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(self.out / "model.safetensors"))
        tensors = {"torch_rng": torch.get_rng_state()}
        for i, st in self.opt.state_dict()["state"].items():
            for k, v in st.items():
                tensors[f"{i}.{k}"] = torch.as_tensor(v).contiguous()
        save_file(tensors, str(self.out / "optimizer.safetensors"))
        state = {"format": FORMAT, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                 "global_step": self.global_step, "losses": self.losses, "tokenizer_version": self.log.tokenizer_version,
                 "generator": asdict(self.cfg.generator), "train": {k: v for k, v in asdict(self.cfg).items() if k != "generator"},
                 "prior_fit": self.prior_fit}
        tmp = self.out / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(self.out / "state.json")  # the state file appears only once the tensors are written

    def cleanup(self) -> None:
        if dist.is_initialized():
            dist.barrier()  # let rank 0 finish its checkpoint before the group goes away
            dist.destroy_process_group()


def fit_room_prior(model: OneLiveGenerator, signals: RoomSignals, rows: np.ndarray, iterations: int = 100,
                   chunk: int = 256) -> tuple[float, float]:
    """Refit the live-room prior and the weight of log P(SID) on held-out request rows, the rest of
    the generator frozen; returns the room cross-entropy on those rows before and after.

    On its own training targets the generator's log P(SID) is sharper than on new requests, so a
    prior trained jointly with it undervalues the identity signals; fitting it on watches the
    generator never trained on (a validation slice before the split) calibrates the two.
    """
    if not model.cfg.room_signals:
        raise ValueError("the generator has no live-room prior (room_signals = 0) to fit")
    H = model.cfg.max_history
    lps, priors_in, at, targets = [], [], [], []  # the fit reads only live (request, room) entries
    n = C = 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), chunk):
            r = np.asarray(rows[i:i + chunk])
            rb = signals.batch(r)
            hist, _ = signals.log.batch(r, H)
            ok = rb.target >= 0  # the watched room is live with a segment (always, for a world's log)
            m = rb.mask[ok]
            lps.append(model.sid_log_prob(hist, rb.codes)[ok][m])
            aff = model.affinity(hist, rb.codes) if model.cfg.code_dim else torch.zeros(rb.mask.shape)
            priors_in.append(torch.cat([rb.signals, aff[..., None]], -1)[ok][m])
            b, c = torch.nonzero(m, as_tuple=True)
            at.append((b + n, c))
            targets.append(rb.target[ok])
            n, C = n + len(m), max(C, m.shape[1])
    lp, x, target = torch.cat(lps), torch.cat(priors_in), torch.cat(targets)
    at = (torch.cat([a[0] for a in at]), torch.cat([a[1] for a in at]))
    S = model.cfg.room_signals

    def loss() -> torch.Tensor:
        score = model.log_lp_scale.exp() * lp + model.prior(x[:, :S], x[:, S] if model.cfg.code_dim else None)
        return F.cross_entropy(torch.full((n, C), float("-inf")).index_put(at, score), target)

    params = [*model.room_prior.parameters(), model.log_lp_scale]
    with torch.no_grad():
        before = loss().item()
    # a few hundred parameters on every held-out entry at once: full-batch L-BFGS reaches a lower
    # loss in 100 iterations than 300 Adam steps did, in less than half the time
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    opt.step(closure)
    with torch.no_grad():
        return before, loss().item()


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
