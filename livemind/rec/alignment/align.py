"""Multi-objective alignment of the OneLive generator (OneLive §4).

The pretrained generator imitates the logged next watch; alignment moves it toward what viewers do
after the click, as the reward model predicts it, while an anchor keeps it near what it learnt.

How a step works (`method="grpo"`):
1. States: viewers at the times of logged watches before the split (their history then).
2. The policy over the rooms live at that time: π(room | s) = softmax over live rooms of the
   generator's score of each room — log P(SID(room) | s), plus the live-room prior over the
   room's identity signals when the generator has one (`OneLiveGenerator.room_scores`) —
   exactly what the constrained decoder ranks by. With tens of rooms live it is computed in
   full (MTP scores every live SID from one pass of the main stack), so sampling needs no
   level-by-level masking. Alignment tunes every weight, the prior's included.
3. G rooms are sampled per state; the reward model scores each one's objectives; they are
   combined with explicit weights (`livemind.align.objectives`), turned into group-relative
   advantages, and the clipped policy loss with a k3 KL to the frozen pretrained generator
   (and optionally the logged next-token loss) is minimised for `updates_per_batch` updates.
`method="dpo"`: the best and the worst sampled room of each group form a preference pair.

Monitored each step without sampling noise: the policy's expected weighted reward Σ π(c) r(c)
over all live rooms, and its exact KL to the reference.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from livemind.align.advantages import SCALES, group_advantages
from livemind.align.loss import dpo_loss, policy_loss
from livemind.align.objectives import AGGREGATIONS, aggregate, check_weights
from livemind.config import from_dict
from livemind.errors import DataError
from livemind.rec.alignment.reward_model import Features, RewardModel, RewardModelConfig
from livemind.rec.data.feedback import OBJECTIVES, ViewerState
from livemind.rec.data.room_signals import RoomSignals
from livemind.rec.data.watch import History, WatchLog
from livemind.rec.live.rooms import LiveRooms
from livemind.rec.model.checkpoint import read_state, save_generator
from livemind.rec.model.generator import OneLiveGenerator
from livemind.report import figure

# Business weights of each objective per impression (a click counts 1; a minute watched 0.1 ...).
DEFAULT_OBJECTIVES: dict[str, float] = {
    "click": 1.0, "watch_minutes": 0.1, "like": 0.5, "comment": 0.5, "follow": 2.0, "gift": 1.0, "purchase": 1.0,
}


@dataclass(frozen=True)
class AlignConfig:
    objectives: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_OBJECTIVES))  # weight per objective
    aggregation: Literal["sum_then_normalize", "normalize_then_sum"] = "sum_then_normalize"
    method: Literal["grpo", "dpo"] = "grpo"
    group_size: int = 8  # rooms sampled per viewer state (G)
    scale: Literal["group", "batch", "none"] = "group"  # advantage scaling
    beta: float = 0.2  # weight of the k3 KL to the pretrained generator (grpo); smaller ones let HR@10 drift
    ntp_weight: float = 0.0  # weight of the logged next-SID cross-entropy anchor (both methods)
    eps: float = 0.2  # ratio clip
    dpo_beta: float = 0.5
    steps: int = 300
    batch_size: int = 64  # viewer states per step
    updates_per_batch: int = 2  # policy updates per sampled batch (the ratio moves off 1 after the first)
    lr: float = 1e-3
    seed: int = 0
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)  # trained when none is given

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", check_weights(dict(self.objectives), OBJECTIVES))
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {list(AGGREGATIONS)}, got {self.aggregation!r}")
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {list(SCALES)}, got {self.scale!r}")
        if self.method not in ("grpo", "dpo"):
            raise ValueError(f"method must be 'grpo' or 'dpo', got {self.method!r}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be at least 2 (advantages are relative to the group), got {self.group_size}")
        for name in ("steps", "batch_size", "updates_per_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("beta", "ntp_weight", "eps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if not (self.lr > 0 and self.dpo_beta > 0):
            raise ValueError(f"lr and dpo_beta must be positive, got {self.lr} and {self.dpo_beta}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.objectives)

    @property
    def weights(self) -> Tensor:
        return self.weights_on("cpu")

    def weights_on(self, device: torch.device | str) -> Tensor:
        """(M,) float32 weights in the order of `names`, on `device`."""
        return torch.tensor(list(self.objectives.values()), dtype=torch.float32, device=device)


@dataclass
class States:
    """A batch of viewer states and the rooms live for each (padded to C)."""

    hist: History
    target: Tensor  # (B, L) the logged next SID
    viewer: np.ndarray  # (B,)
    time: np.ndarray  # (B,)
    room: np.ndarray  # (B, C) live rooms, -1 = padding
    sid: Tensor  # (B, C, L)
    signals: Tensor  # (B, C, S) identity signals of the rooms (read by a live-room prior)
    mask: Tensor  # (B, C) bool

    def to(self, device: torch.device) -> States:
        """The tensors on `device` (the numpy arrays stay on the host for the reward model)."""
        return replace(self, hist=self.hist.to(device), target=self.target.to(device),
                    sid=self.sid.to(device), signals=self.signals.to(device), mask=self.mask.to(device))


def live_states(signals: RoomSignals, rows: np.ndarray, max_history: int) -> States:
    """The states of log rows `rows`: each viewer's history then and every room live at that time."""
    log = signals.log
    hist, target = log.batch(rows, max_history)
    rb = signals.batch(rows)
    return States(hist, target, log.viewer[rows], log.time[rows], rb.rooms, rb.codes, rb.signals, rb.mask)


def live_log_probs(model: OneLiveGenerator, st: States) -> Tensor:
    """log π(room | state) over each state's live rooms, (B, C); padding -inf."""
    if model.cfg.room_signals:
        score = model.room_scores(st.hist, st.sid, st.signals)
    else:
        score = model.sid_log_prob(st.hist, st.sid)
    return torch.log_softmax(score.masked_fill(~st.mask.to(score.device), float("-inf")), dim=1)


class RewardScorer:
    """Expected objectives of showing live rooms to viewers at times, from the reward model."""

    def __init__(self, model: RewardModel, state: ViewerState, log: WatchLog, live: LiveRooms,
                 names: tuple[str, ...]) -> None:
        self.model, self.state, self.log, self.live, self.names = model, state, log, live, names

    @torch.inference_mode()
    def __call__(self, viewers: np.ndarray, rooms: np.ndarray, sids: Tensor, times: np.ndarray) -> Tensor:
        """viewers, rooms, times: (N,); sids: (N, L) -> (N, M) in the order of `names`."""
        streamers = self.live.streamer_of(rooms)
        topic = self.live.frame.topic_of(self.live.frame.lookup(rooms, times))
        f = Features.build(self.log, self.model.cfg.history, viewers, streamers, sids, times,
                           self.state.watches(viewers, streamers, times), self.state.follows(viewers, streamers, times),
                           topic)
        return self.model.objectives(f, self.names)

    def candidates(self, st: States) -> Tensor:
        """(B, C, M) objectives of every live room of every state (padding 0)."""
        B, C = st.room.shape
        keep = st.room >= 0
        out = torch.zeros(B, C, len(self.names), device=next(self.model.parameters()).device)
        sel = torch.from_numpy(keep).to(out.device)
        out[sel] = self(np.repeat(st.viewer, C)[keep.ravel()], st.room[keep],
                                           st.sid.cpu()[torch.from_numpy(keep)], np.repeat(st.time, C)[keep.ravel()])
        return out


@dataclass
class AlignResult:
    model: OneLiveGenerator
    history: list[dict[str, float]]  # one row per step: value, value_ref, kl, loss, clip, reward
    seconds: float


def check_versions(log: WatchLog, reward: RewardModel, live: LiveRooms) -> None:
    if reward.tokenizer_version != log.tokenizer_version or live.version != log.tokenizer_version:
        raise DataError(f"tokenizer versions disagree: reward model {reward.tokenizer_version}, watch log "
                        f"{log.tokenizer_version}, live index {live.version}; retrain the reward model on this tokenizer")


def align(cfg: AlignConfig, pretrained: OneLiveGenerator, reward: RewardModel, state: ViewerState, log: WatchLog,
          live: LiveRooms, rows: np.ndarray, progress: Callable[[int, int, dict], None] | None = None) -> AlignResult:
    """Tune a copy of `pretrained` toward the weighted objectives; `rows` are the log rows used as states."""
    check_versions(log, reward, live)
    if not len(rows):
        raise DataError("no viewer states to align on")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    ref = pretrained.eval()
    policy = copy.deepcopy(pretrained).train()
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    scorer = RewardScorer(reward, state, log, live, cfg.names)
    signals = RoomSignals(log, state, live, pretrained.cfg.signals)
    dev = policy.device
    w, G, H = cfg.weights_on(dev), cfg.group_size, pretrained.cfg.max_history
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        st = live_states(signals, rng.choice(rows, cfg.batch_size, replace=len(rows) < cfg.batch_size), H)
        obj = scorer.candidates(st).to(dev)  # (B, C, M), from the reward model on the host
        st = st.to(dev)
        value_c = (obj * w).sum(-1)  # (B, C) weighted reward of every live room
        with torch.no_grad():
            old = live_log_probs(policy, st)
            ref_lp = live_log_probs(ref, st)
        idx = torch.multinomial(old.exp(), G, replacement=True, generator=gen)  # (B, G)
        rewards = obj.gather(1, idx[..., None].expand(-1, -1, obj.shape[-1])).reshape(-1, obj.shape[-1])  # (B*G, M)
        r = aggregate(rewards, w, G, cfg.aggregation)  # (B*G,)
        adv = group_advantages(r, G, cfg.scale)
        stats: dict[str, float] = {}
        rg = r.view(-1, G)
        pairs = idx.gather(1, torch.stack([rg.argmax(1), rg.argmin(1)], dim=1))  # (B, 2) best, worst sampled room
        has_pair = rg.max(1).values > rg.min(1).values  # (B,)
        for _ in range(cfg.updates_per_batch):
            lp = live_log_probs(policy, st)  # (B, C)
            if cfg.method == "grpo":
                loss, ps = policy_loss(lp.gather(1, idx).reshape(-1, 1), old.gather(1, idx).reshape(-1, 1), adv,
                                       ref_logp=ref_lp.gather(1, idx).reshape(-1, 1), beta=cfg.beta,
                                       eps_low=cfg.eps, eps_high=cfg.eps)  # each (B*G, 1): one token per choice
                stats["clip"] = ps.clip_fraction
            elif has_pair.any():
                pol, rf = lp.gather(1, pairs)[has_pair], ref_lp.gather(1, pairs)[has_pair]  # (P, 2)
                loss = dpo_loss(pol[:, 0], pol[:, 1], rf[:, 0], rf[:, 1], cfg.dpo_beta)
            else:
                loss = lp.masked_fill(~st.mask, 0.0).sum() * 0.0  # no preference in this batch: no step direction
            if cfg.ntp_weight > 0:
                loss = loss + cfg.ntp_weight * policy.loss(st.hist, st.target)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            p, pr = old.exp(), ref_lp.exp()
            kl = torch.where(st.mask, p * (old - ref_lp), torch.zeros_like(p)).sum(1).mean()
            stats |= {"step": step + 1, "value": float((p * value_c).sum(1).mean()),
                      "value_ref": float((pr * value_c).sum(1).mean()), "kl": float(kl), "loss": float(loss),
                      "reward": float((rewards * w).sum(1).mean())}
        history.append(stats)
        if progress is not None:
            progress(step + 1, cfg.steps, stats)
    return AlignResult(policy.eval(), history, time.perf_counter() - t0)


def fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights: an aligned generator is only as current as the pretrained
    generator and the reward model it was aligned from."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_aligned(res: AlignResult, cfg: AlignConfig, out: str | Path, tokenizer_version: str,
                 reward_dir: str | Path | None = None, reward: RewardModel | None = None,
                 pretrained: OneLiveGenerator | None = None) -> Path:
    """A generator checkpoint (`load_generator` reads it) plus the alignment curve (CSV and PNG);
    with `reward` and `pretrained`, the fingerprints of both (`aligned_fingerprints`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "align.csv", "w", newline="") as f:
        cols = list(res.history[0]) if res.history else ["step"]
        writer = csv.DictWriter(f, cols)
        writer.writeheader()
        writer.writerows(res.history)
    plot_alignment(res.history, out / "align.png")
    save_generator(res.model, out, tokenizer_version, align=asdict(cfg),
                   reward_model=str(reward_dir) if reward_dir else None,
                   reward_fingerprint=fingerprint(reward) if reward is not None else None,
                   pretrained_fingerprint=fingerprint(pretrained) if pretrained is not None else None,
                   seconds=res.seconds, steps=len(res.history))
    return out


def aligned_fingerprints(out: str | Path) -> tuple[str | None, str | None]:
    """`fingerprint`s of the pretrained generator and the reward model a saved aligned checkpoint
    was aligned from (None where it has none)."""
    state = read_state(out) if (Path(out) / "state.json").is_file() else {}
    return state.get("pretrained_fingerprint"), state.get("reward_fingerprint")


def aligned_config(out: str | Path) -> AlignConfig | None:
    """The AlignConfig a saved aligned checkpoint was trained with (None: no aligned checkpoint there)."""
    if not (Path(out) / "state.json").is_file():
        return None
    state = read_state(out)
    return from_dict(AlignConfig, state["align"]) if "align" in state else None


def plot_alignment(history: list[dict[str, float]], path: Path) -> None:
    steps = [h["step"] for h in history]
    with figure(path, 2, (9, 3.2)) as (_, (a, b)):
        a.plot(steps, [h["value"] for h in history], label="policy")
        a.plot(steps, [h["value_ref"] for h in history], label="pretrained", alpha=0.7)
        a.set(xlabel="step", ylabel="expected weighted reward", title="reward-model value of the policy")
        a.legend()
        b.plot(steps, [h["kl"] for h in history])
        b.set(xlabel="step", ylabel="KL(policy || pretrained)", title="drift from the pretrained generator")

