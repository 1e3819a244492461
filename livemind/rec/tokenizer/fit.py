"""Offline training of the dynamic tokenizer from a world's log (OneLive §1).

1. Embed every segment's text (x30) and pool each room's history (xpool).
2. Train the room tower on two objectives, both InfoNCE with in-batch negatives:
   - behaviour (the paper's two-tower post-alignment): viewer vs the room's segment for each
     positive feedback event (watch weighted by time watched, comment, gift, follow, purchase).
     A watch is paired with a segment drawn from everything on screen during the watch, not
     only its first segment, and each positive gets a temporal hard negative: the same room
     showing other content.
   - content (our addition, `content_weight`): two segments with the same product card (or, with
     `content_key: topic`, the same product category) are pulled together and other cards,
     including the same room's, pushed away.
   Why the content term: in a world where repeat viewing dominates feedback, behaviour alone
   teaches the tower *which streamer* rather than *what is on screen*, and level-1 codes stop
   following the content (a larger content weight makes more category changes move the level-1
   code).
3. Fit residual k-means on the room tower's outputs for the training segments.

Only events and segments before `train_until` are used, so evaluation can run on a later window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from livemind.errors import DataError
from livemind.rec.data.segments import SegmentFrame
from livemind.rec.tokenizer.content import ContentEncoder
from livemind.rec.tokenizer.dynamic import DynamicTokenizer, EncoderConfig, SidLayout, make_encoder
from livemind.rec.tokenizer.fusion import FusionConfig, RoomTower, ViewerTower, in_batch_softmax_loss
from livemind.rec.tokenizer.rq import ResidualQuantizer, RQConfig
from livemind.world.schema import EVENT_KINDS
from livemind.world.tables import WorldData

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class TokenizerConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)  # content_dim is taken from the encoder
    rq: RQConfig = field(default_factory=RQConfig)
    epochs: int = 6
    batch_size: int = 512
    lr: float = 2e-3
    w_watch: float = 1.0  # times (0.5 + min(seconds / 600, 1))
    w_comment: float = 1.0
    w_gift: float = 1.5
    w_follow: float = 1.5
    w_purchase: float = 2.0
    hard_negatives: bool = True  # add the same room showing other content as a negative
    content_weight: float = 8.0  # weight of the product-card alignment loss (0 = behaviour only)
    content_key: str = "card"  # what counts as the same content: "card" (the product) or "topic" (its category)
    behaviour_weight: float = 1.0  # weight of the viewer-room two-tower loss (0 = content only)
    max_fit_vectors: int = 200_000  # segments used to fit the codebooks
    max_steps: int = 0  # at most this many training steps (epochs end early); 0 = every epoch in full
    train_until: float | None = None  # Unix time; later events and segments are held out
    seed: int = 0
    sid: SidLayout = field(default_factory=SidLayout)  # topic and identity levels around the residual codes

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"epochs must be >= 1 and batch_size >= 2, got {self.epochs}, {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 (0 = no cap), got {self.max_steps}")
        weights = {k: getattr(self, f"w_{k}") for k in ("watch", "comment", "gift", "follow", "purchase")}
        if any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise ValueError(f"feedback weights must be non-negative and not all zero, got {weights}")
        if self.content_weight < 0 or self.behaviour_weight < 0 or self.content_weight + self.behaviour_weight == 0:
            raise ValueError(f"content_weight and behaviour_weight must be non-negative and not both zero, "
                             f"got {self.content_weight}, {self.behaviour_weight}")
        if self.content_key not in ("card", "topic"):
            raise ValueError(f"content_key must be 'card' or 'topic', got {self.content_key!r}")


@dataclass
class FitResult:
    tokenizer: DynamicTokenizer
    losses: list[float]  # training loss per step
    lam: float  # learned ID gate λ (mean over dimensions)
    n_positives: int
    n_fit_vectors: int


@dataclass
class Positives:
    """Positive feedback: viewer [P], room [P], the span [t0, t1) the feedback is about [P], weight [P]."""

    viewer: np.ndarray
    room: np.ndarray
    t0: np.ndarray
    t1: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.viewer)

    def segments(self, frame: SegmentFrame, rng: np.random.Generator | None) -> np.ndarray:
        """The segment each positive is paired with: for a watch, one drawn uniformly from what was on
        screen during the watch (`rng`), or the first one (`rng=None`); for other feedback, the
        segment at that moment."""
        u = rng.random(len(self)) if rng is not None else np.zeros(len(self))
        return frame.lookup(self.room, self.t0 + u * (self.t1 - self.t0))


def positives(world: WorldData, frame: SegmentFrame, cfg: TokenizerConfig) -> Positives:
    """Every positive feedback event before train_until whose room has segments."""
    ev = world.event_batch()
    kinds = {EVENT_KINDS.index(k): getattr(cfg, f"w_{k}") for k in ("watch", "comment", "gift", "follow", "purchase")}
    keep = np.isin(ev.kind, [k for k, w in kinds.items() if w > 0])
    if cfg.train_until is not None:
        keep &= ev.time < cfg.train_until
    ev = ev.take(np.flatnonzero(keep))
    weight = np.zeros(len(ev))
    for code, w in kinds.items():
        weight[ev.kind == code] = w
    is_watch = ev.kind == EVENT_KINDS.index("watch")
    weight[is_watch] *= 0.5 + np.minimum(ev.value[is_watch] / 600.0, 1.0)
    t1 = np.where(is_watch, ev.time + np.maximum(ev.value, 0.0), ev.time)
    ok = frame.lookup(ev.room, ev.time) >= 0
    return Positives(ev.viewer[ok], ev.room[ok], ev.time[ok], t1[ok], weight[ok])


class CardPairs:
    """Pairs of segments showing the same product card (chat: chat in the same room).

    Live commerce labels its own content: the product card on screen. Two segments with the same
    card are the same content however the host phrases it, so pulling them together (and pushing
    other cards away) makes the room vector follow what is shown rather than the wording.
    `by="topic"` pairs any two products of the same category instead (the card's catalogue
    category): level-1 codes then follow the category, at the price of no longer separating
    products within it (chosen on held-out rooms).
    """

    def __init__(self, frame: SegmentFrame, rows: np.ndarray, by: str = "card") -> None:
        content = frame.product if by == "card" else np.unique(frame.topic, return_inverse=True)[1]
        key = np.where(frame.product >= 0, content, -1 - frame.room)  # (N,) content key
        self.key = key
        rows = rows[np.argsort(key[rows], kind="stable")]
        k = key[rows]
        starts = np.r_[0, np.flatnonzero(np.diff(k)) + 1]
        counts = np.diff(np.r_[starts, len(rows)])
        multi = counts > 1  # a card seen once has no partner
        self.rows, self.starts, self.counts = rows, starts[multi], counts[multi]
        self.weights = self.counts / self.counts.sum()

    def pairs(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n (anchor, partner) segment rows; distinct cards are drawn in proportion to their segments."""
        g = rng.choice(len(self.starts), size=n, p=self.weights)
        i = (rng.random(n) * self.counts[g]).astype(np.int64)
        j = (i + 1 + (rng.random(n) * (self.counts[g] - 1)).astype(np.int64)) % self.counts[g]
        return self.rows[self.starts[g] + i], self.rows[self.starts[g] + j]


def _same_room_other_content(frame: SegmentFrame, seg: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For each segment row, a random segment of the same room and whether it shows other content.

    Temporal hard negatives: "the viewer engaged with this room while it showed X, not while it
    showed Y" is what makes the room vector follow the content instead of the room's identity.
    """
    pos = np.searchsorted(frame.room_ids, frame.room[seg])
    other = frame.room_offset[pos] + (rng.random(len(seg)) * frame.room_count[pos]).astype(np.int64)
    ok = (frame.product[other] != frame.product[seg]) | (frame.topic[other] != frame.topic[seg])
    return other, ok


def fit_tokenizer(world: WorldData, cfg: TokenizerConfig, encoder: ContentEncoder | None = None,
                  cache_dir: str | Path | None = None, progress: Progress | None = None) -> FitResult:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    frame = SegmentFrame.from_world(world)
    encoder = encoder or make_encoder(cfg.encoder, cache_dir)
    train_seg = np.flatnonzero(frame.start_time < cfg.train_until) if cfg.train_until else np.arange(len(frame))
    if progress:
        progress("embedding segments", 0, 1)
    x30 = encoder.encode(frame.text)  # (N, Dc)
    if hasattr(encoder, "save_cache"):
        encoder.save_cache()
    if progress:
        progress("embedding segments", 1, 1)
    xpool = frame.pooled(x30)
    pos = positives(world, frame, cfg)
    if len(pos) < cfg.batch_size:
        raise DataError(f"only {len(pos)} positive feedback events to train on; need at least batch_size={cfg.batch_size}")

    fcfg = dataclasses.replace(cfg.fusion, content_dim=encoder.dim)
    room_tower, viewer_tower = RoomTower(fcfg), ViewerTower(fcfg)
    params = list(room_tower.parameters()) + list(viewer_tower.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    x30_t, xpool_t = torch.from_numpy(x30), torch.from_numpy(xpool)
    streamer_t = torch.from_numpy(frame.streamer)
    cards = CardPairs(frame, train_seg, cfg.content_key)
    steps_per_epoch = len(pos) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    losses: list[float] = []
    room_tower.train()
    viewer_tower.train()
    first_seg = pos.segments(frame, None)  # the segment at the moment of the feedback
    for epoch in range(-(-total // steps_per_epoch)):  # the last epoch may stop early (max_steps)
        seg = pos.segments(frame, rng)  # a fresh draw from each watched span every epoch
        seg = np.where(seg >= 0, seg, first_seg)
        order = rng.permutation(len(pos))
        for b in range(min(steps_per_epoch, total - epoch * steps_per_epoch)):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            s = torch.from_numpy(seg[idx])
            u = viewer_tower(torch.from_numpy(pos.viewer[idx]))
            r = room_tower(x30_t[s], xpool_t[s], streamer_t[s])
            r_hard = hard_ok = None
            if cfg.hard_negatives:
                h, ok = _same_room_other_content(frame, seg[idx], rng)
                ht = torch.from_numpy(h)
                r_hard, hard_ok = room_tower(x30_t[ht], xpool_t[ht], streamer_t[ht]), torch.from_numpy(ok)
            loss = cfg.behaviour_weight * in_batch_softmax_loss(
                u, r, s, torch.from_numpy(pos.weight[idx]).float(), fcfg.temperature, r_hard, hard_ok)
            if cfg.content_weight > 0:
                anchor, partner = cards.pairs(cfg.batch_size, rng)
                at, pt = torch.from_numpy(anchor), torch.from_numpy(partner)
                ra = room_tower(x30_t[at], xpool_t[at], streamer_t[at])
                rp = room_tower(x30_t[pt], xpool_t[pt], streamer_t[pt])
                key = torch.from_numpy(cards.key[anchor])
                h, ok = _same_room_other_content(frame, anchor, rng)
                ht = torch.from_numpy(h)
                rh = room_tower(x30_t[ht], xpool_t[ht], streamer_t[ht])
                loss = loss + cfg.content_weight * in_batch_softmax_loss(
                    ra, rp, key, torch.ones(len(anchor)), fcfg.temperature, rh, torch.from_numpy(ok))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if progress:
                progress("training room tower", epoch * steps_per_epoch + b + 1, total)
    room_tower.eval()

    fit_rows = train_seg if len(train_seg) <= cfg.max_fit_vectors else rng.choice(train_seg, cfg.max_fit_vectors, replace=False)
    with torch.inference_mode():
        vec = torch.cat([room_tower(x30_t[i:i + 8192], xpool_t[i:i + 8192], streamer_t[i:i + 8192])
                         for i in range(0, len(frame), 8192)]).numpy()
    rq = ResidualQuantizer(cfg.rq).fit(vec[fit_rows], progress=(lambda d, t: progress("fitting codebooks", d, t)) if progress else None)
    tok = DynamicTokenizer(encoder, room_tower, rq, cfg.encoder, layout=cfg.sid, topics=frame.topic[train_seg].astype(str))
    return FitResult(tok, losses, room_tower.fusion.lam.mean().item(), len(pos), len(fit_rows))


def tenths(log: Callable[[str], None]) -> Progress:
    """A Progress that logs each stage when it starts, at every tenth of its total and when it ends."""
    shown: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        if shown.get(stage, -1) < tenth:
            shown[stage] = tenth
            log(f"tokenizer: {stage} {done:,}/{total:,}")

    return report


def fit_or_load(world: WorldData, cfg: TokenizerConfig, world_config: object, out: str | Path,
                log: Callable[[str], None] = print) -> DynamicTokenizer:
    """The tokenizer fit on `world` with `cfg`, cached under `out/tokenizer-<hash of both configs>`.

    Benchmarks that build on one tokenizer reuse one fit (about 10 minutes on the benchmark
    world) instead of paying for it on every run; a cache that fails to load is refit.
    """
    import hashlib
    import json

    from livemind.errors import LivemindError

    out = Path(out)
    # the SID layout changes no weight: one fit serves every layout (laid out after loading), and the
    # key leaves it out, so fits cached before layouts existed are found under the key they had; it
    # leaves out max_steps while it is 0 (no cap) too, so fits cached before the cap existed keep theirs
    plain = dataclasses.replace(cfg, sid=SidLayout())
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "sid" and not (k == "max_steps" and not v)}
    key = hashlib.sha256(json.dumps([dataclasses.asdict(world_config), fields], sort_keys=True,
                                    default=str).encode()).hexdigest()[:12]
    path = out / f"tokenizer-{key}"
    if (path / "tokenizer.json").is_file():  # written last by save()
        try:
            tok = DynamicTokenizer.load(path, cache_dir=out / "embeddings")
            log(f"tokenizer loaded from {path} ({tok.version}), fit by an earlier run")
            return laid_out(tok, world, cfg)
        except LivemindError as exc:
            log(f"refitting the tokenizer: {exc}")
    fit = fit_tokenizer(world, plain, cache_dir=out / "embeddings", progress=tenths(log))
    fit.tokenizer.save(path)
    log(f"tokenizer fit ({fit.tokenizer.version}), saved to {path}")
    return laid_out(fit.tokenizer, world, cfg)


def laid_out(tok: DynamicTokenizer, world: WorldData, cfg: TokenizerConfig) -> DynamicTokenizer:
    """`tok` with `cfg.sid`'s layout, topics numbered from the segments before `cfg.train_until`."""
    if tok.layout == cfg.sid:
        return tok
    frame = SegmentFrame.from_world(world)
    train = frame.start_time < cfg.train_until if cfg.train_until is not None else np.ones(len(frame), dtype=bool)
    return DynamicTokenizer(tok.encoder, tok.tower, tok.quantizer, tok.encoder_config, tok.sticky, cfg.sid,
                            frame.topic[train].astype(str))
