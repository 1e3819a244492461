"""A seeded, vectorised live-commerce world with known ground truth.

Design choices:
- Latent space: each content category has a unit vector; products sit near their category's
  vector, each streamer has a "persona" vector for chat segments, each viewer a taste vector that
  mixes a main and a second category. `match = taste · content` drives all feedback.
- Rooms: every streamer goes live on most days near a preferred hour, for 10 minutes to 6 hours
  (log-normal). A room is live on [start_time, end_time).
- Content changes every 30 s segment: the card shows a product for a geometric run of segments
  (mean `mean_product_segments`), then the host switches product, often to another category, or
  chats. Segment text is the product card's title plus a transcript line whose template cycles,
  so consecutive segments never read the same.
  Because a room's category drifts within a session, a recommender that follows the current
  segment beats one that only knows the room ID.
- Viewers visit at a daily rhythm (von Mises around a home hour), are shown
  `impressions_per_visit` live rooms by a logging policy (popularity, familiarity, follows and a
  noisy taste match) and answer through `respond`: click, watch seconds, like, comment, share,
  follow, gift, purchase. Familiarity (past watches) and follows feed back into the next clicks,
  which gives repeat consumption.
- Ground truth: `expected(viewers, rooms, t)` returns the expected feedback of one impression,
  `utility(...)` its weighted sum: what an online A/B test measures.
- Viewers ask questions about the product on the card; gold answers come from product facts.

Memory: familiarity is a dense float32 viewers x streamers matrix (20k x 300 = 24 MB).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from livemind.errors import DataError
from livemind.world.catalog import CATEGORIES, CATEGORY_NAMES, make_product
from livemind.world.questions import QUESTION_KINDS, ask
from livemind.world.schema import (
    EventBatch,
    EventKind,
    Product,
    Question,
    Segment,
    Streamer,
    Viewer,
    records_to_table,
)
from livemind.world.tables import WorldData

DAY = 86_400.0
K = {k: k.code for k in EventKind}  # EventKind -> int8 code

# Weights of the default utility: per impression, a click is worth 1, a minute watched 0.1 ...
DEFAULT_UTILITY_WEIGHTS: dict[str, float] = {
    "click": 1.0, "watch_minutes": 0.1, "like": 0.5, "comment": 0.5, "share": 0.5,
    "follow": 2.0, "gift_value": 0.05, "gmv": 0.02,
}


def weighted_sum(expected: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Σ_k w_k expected[k] over the keys of `weights` (default `DEFAULT_UTILITY_WEIGHTS`), [N]."""
    weights = DEFAULT_UTILITY_WEIGHTS if weights is None else weights
    unknown = sorted(set(weights) - set(expected))
    if unknown:
        raise DataError(f"unknown utility objective(s) {unknown}; expected some of {sorted(expected)}")
    return sum(w * expected[k] for k, w in weights.items())


@dataclass(frozen=True)
class WorldConfig:
    """Size and behaviour of a simulated world. Every field has a reason beside it."""

    seed: int = 0
    n_viewers: int = 2000
    n_streamers: int = 150
    n_categories: int = 8  # content categories in use (at most len(CATEGORIES))
    products_per_streamer: int = 8  # a streamer's catalog
    days: float = 2.0  # simulated horizon
    start_time: float = 1767571200.0  # Monday 2026-01-05 00:00 UTC
    segment_seconds: float = 30.0  # OneLive's content window
    step_seconds: float = 300.0  # simulation step for viewer visits
    latent_dim: int = 16
    live_days_fraction: float = 0.8  # mean chance a streamer goes live on a given day
    mean_room_minutes: float = 90.0
    min_room_minutes: float = 10.0
    max_room_minutes: float = 360.0
    mean_product_segments: float = 6.0  # a product stays on the card ~3 minutes
    chat_fraction: float = 0.15  # share of content runs with no product (chatting)
    main_category_share: float = 0.5  # share of a streamer's catalog in its main category
    visits_per_day: float = 4.0
    impressions_per_visit: int = 8
    policy_match_weight: float = 1.0  # how personalised the logging policy is (0 = not at all)
    question_rate: float = 0.05  # chance that a click comes with a chat question
    click_bias: float = -2.5
    click_match: float = 4.0  # weight of taste . current content on the click logit
    click_popularity: float = 0.4
    click_familiarity: float = 0.6  # weight of log(1 + past watches of this streamer)
    click_follow: float = 1.0
    mean_watch_seconds: float = 180.0
    watch_match: float = 1.2

    def __post_init__(self) -> None:
        for name in ("n_viewers", "n_streamers", "n_categories", "products_per_streamer", "latent_dim",
                     "impressions_per_visit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_categories > len(CATEGORIES):
            raise ValueError(f"n_categories must be at most {len(CATEGORIES)}, got {self.n_categories}")
        for name in ("days", "segment_seconds", "step_seconds", "mean_room_minutes", "min_room_minutes",
                     "mean_watch_seconds", "visits_per_day"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.min_room_minutes <= self.max_room_minutes:
            raise ValueError(f"min_room_minutes {self.min_room_minutes} exceeds max_room_minutes {self.max_room_minutes}")
        if self.mean_product_segments < 1:
            raise ValueError(f"mean_product_segments must be at least 1, got {self.mean_product_segments}")
        for name in ("live_days_fraction", "chat_fraction", "main_category_share", "question_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def end_time(self) -> float:
        return self.start_time + self.days * DAY


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _hours(rng: np.random.Generator, n: int) -> np.ndarray:
    """Preferred hours of day: mostly evening, some afternoon and morning."""
    centre = rng.choice([20.0, 14.0, 9.0], size=n, p=[0.6, 0.25, 0.15])
    return (centre + rng.normal(0, 1.5, size=n)) % 24


_CHAT_TOPICS = ("today's outfit", "a trip to the coast", "fan questions", "the giveaway rules", "the next live schedule",
                "a cooking mishap", "the team behind the stream", "weekend plans")
_PRODUCT_LINES = (
    "the {name} is on the card now, {material}, {discount} today",
    "only {stock} left of the {name}, grab one before it's gone",
    "the {name} comes in {sizes}, {spec_name}: {spec_value}",
    "coupon time: spend {threshold} and save {coupon} on the {name}",
    "the {name} ships in {ship_days} days, {returns}",
    "buy {bundle_qty} {name} and take {bundle_pct}% off the lot",
)
_CHAT_LINES = (
    "chatting with fans about {topic}",
    "reading comments, thanks for the follows, next up {topic}",
    "giveaway check: comment the word {word} to join",
    "taking a short break to talk about {topic}",
)


class LiveWorld:
    """The simulated world: static entities at construction, behaviour through `simulate`/`respond`."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = c = config
        rng = np.random.default_rng(c.seed)
        n_cat = c.n_categories
        self.category_vectors = _unit(rng.normal(size=(n_cat, c.latent_dim)))  # (C, d)
        cat_weights = 1.0 / np.sqrt(np.arange(1, n_cat + 1))
        cat_weights /= cat_weights.sum()

        # --- streamers -------------------------------------------------------------------
        S = c.n_streamers
        self.streamer_category = rng.choice(n_cat, size=S, p=cat_weights)
        self.streamer_second = (self.streamer_category + rng.integers(1, max(n_cat, 2), size=S)) % n_cat
        pop = rng.lognormal(0.0, 0.8, size=S)
        self.popularity = pop / pop.mean()
        self.log_popularity = np.log(self.popularity)
        self.streamer_hour = _hours(rng, S)
        self.live_prob = np.clip(c.live_days_fraction + rng.normal(0, 0.1, size=S), 0.05, 1.0)
        self.persona = _unit(0.6 * self.category_vectors[self.streamer_category] + rng.normal(0, 0.5, (S, c.latent_dim)) / math.sqrt(c.latent_dim) * 2)
        self.streamers = [
            Streamer(i, f"host_{i:04d}", CATEGORY_NAMES[self.streamer_category[i]], float(self.popularity[i]))
            for i in range(S)
        ]

        # --- products: half in the main category, the rest in the second or any other ----
        P = c.products_per_streamer
        n_main = max(1, round(P * c.main_category_share))
        self.products: list[Product] = []
        for s in range(S):
            for j in range(P):
                if j < n_main:
                    cat = self.streamer_category[s]
                elif rng.random() < 0.6:
                    cat = self.streamer_second[s]
                else:
                    cat = rng.integers(n_cat)
                self.products.append(make_product(rng, s * P + j, s, int(cat)))
        self.product_category = np.array([CATEGORY_NAMES.index(p.category) for p in self.products])
        self.product_vectors = _unit(self.category_vectors[self.product_category]
                                     + rng.normal(0, 0.35, (len(self.products), c.latent_dim)) / math.sqrt(c.latent_dim) * 2)
        self.product_unit_price = np.array([p.quote(1)["unit_price"] for p in self.products])
        self.product_in_stock = np.array([p.stock > 0 for p in self.products])

        # --- viewers ---------------------------------------------------------------------
        V = c.n_viewers
        self.viewer_category = rng.choice(n_cat, size=V, p=cat_weights)
        second = (self.viewer_category + rng.integers(1, max(n_cat, 2), size=V)) % n_cat
        self.taste = _unit(self.category_vectors[self.viewer_category] + 0.5 * self.category_vectors[second]
                           + rng.normal(0, 0.25, (V, c.latent_dim)))
        self.viewer_hour = _hours(rng, V)
        self.viewer_visits = rng.gamma(2.0, c.visits_per_day / 2.0, size=V)
        self.gift_propensity = rng.normal(-1.0, 1.0, size=V)
        self.buy_propensity = rng.normal(0.0, 0.7, size=V)

        self._build_rooms(rng)
        self._build_segments(rng)
        self.familiarity = np.zeros((V, S), dtype=np.float32)  # past watches of each streamer
        self.follows = np.zeros((V, S), dtype=bool)
        self.rng = np.random.default_rng([c.seed, 1])  # behaviour stream, separate from structure
        self._next_question = 0

    # ------------------------------------------------------------------------------------
    # structure

    def _build_rooms(self, rng: np.random.Generator) -> None:
        c = self.config
        rows: list[tuple[float, float, int]] = []
        for s in range(c.n_streamers):
            last_end = -math.inf
            for day in range(math.ceil(c.days)):
                if rng.random() >= self.live_prob[s]:
                    continue
                start = c.start_time + day * DAY + (self.streamer_hour[s] + rng.normal(0, 1.0)) * 3600
                minutes = float(np.clip(rng.lognormal(math.log(c.mean_room_minutes), 0.6),
                                        c.min_room_minutes, c.max_room_minutes))
                start = float(round(max(start, last_end + 600, c.start_time)))
                if start >= c.end_time:
                    continue
                end = start + round(minutes * 60)
                rows.append((start, end, s))
                last_end = end
        rows.sort()
        self.room_start = np.array([r[0] for r in rows], dtype=np.float64)
        self.room_end = np.array([r[1] for r in rows], dtype=np.float64)
        self.room_streamer = np.array([r[2] for r in rows], dtype=np.int64)

    def _build_segments(self, rng: np.random.Generator) -> None:
        c = self.config
        R = len(self.room_start)
        n_seg = np.ceil((self.room_end - self.room_start) / c.segment_seconds).astype(np.int64)
        self.room_n_segments = n_seg
        self.room_seg_offset = np.concatenate([[0], np.cumsum(n_seg)[:-1]]).astype(np.int64)
        N = int(n_seg.sum())
        seg_room = np.repeat(np.arange(R), n_seg)
        seg_index = np.arange(N) - self.room_seg_offset[seg_room]
        # content runs: a new run starts each room and with probability 1/mean afterwards
        new_run = (seg_index == 0) | (rng.random(N) < 1.0 / c.mean_product_segments)
        run = np.cumsum(new_run) - 1
        n_runs = int(run[-1]) + 1 if N else 0
        run_streamer = self.room_streamer[seg_room[new_run]]
        run_chat = rng.random(n_runs) < c.chat_fraction
        run_product = run_streamer * c.products_per_streamer + rng.integers(0, c.products_per_streamer, n_runs)
        self.seg_room = seg_room
        self.seg_index = seg_index
        self.seg_start = self.room_start[seg_room] + seg_index * c.segment_seconds
        self.seg_product = np.where(run_chat[run], -1, run_product[run])
        self.seg_vectors = np.where((self.seg_product >= 0)[:, None],
                                    self.product_vectors[np.maximum(self.seg_product, 0)],
                                    self.persona[self.room_streamer[seg_room]])  # (N, d)
        self._seg_text = self._segment_texts(rng)

    def _segment_texts(self, rng: np.random.Generator) -> list[str]:
        """Card title | transcript line, the line template cycling with the segment index.

        The card title stands for what a viewer (or a multimodal encoder) sees on screen: the
        product card of the item being sold, absent while the host chats. The room's own title
        is static metadata and lives on the Room, not in every segment.
        """
        words = rng.choice(["lucky", "sparkle", "deal", "hello", "yes"], size=len(self.seg_room))
        topics = rng.integers(0, len(_CHAT_TOPICS), size=len(self.seg_room))
        texts = []
        for i, (idx, prod) in enumerate(zip(self.seg_index, self.seg_product)):
            if prod < 0:
                line = _CHAT_LINES[idx % len(_CHAT_LINES)].format(topic=_CHAT_TOPICS[topics[i]], word=words[i])
            else:
                p = self.products[prod]
                spec_name = sorted(p.specs)[idx % len(p.specs)]
                line = _PRODUCT_LINES[idx % len(_PRODUCT_LINES)].format(
                    name=p.name, material=" and ".join(p.materials),
                    discount=f"{p.discount_pct:g}% off" if p.discount_pct else "full price", stock=p.stock,
                    sizes=", ".join(p.sizes), spec_name=spec_name, spec_value=p.specs[spec_name],
                    threshold=f"{p.coupon_threshold:g}", coupon=f"{p.coupon_amount:g}", ship_days=p.ship_days,
                    returns=f"{p.return_days}-day returns" if p.return_days else "no returns",
                    bundle_qty=p.bundle_qty, bundle_pct=f"{p.bundle_pct:g}")
            card = "no product on the card" if prod < 0 else f"on the card: {self.products[prod].name}"
            texts.append(f"{card} | {line}")
        return texts

    # ------------------------------------------------------------------------------------
    # lookups

    @property
    def n_rooms(self) -> int:
        return len(self.room_start)

    def live_rooms(self, t: float) -> np.ndarray:
        """Ids of rooms live at time t, ascending."""
        return np.flatnonzero((self.room_start <= t) & (t < self.room_end))

    def segment_index(self, rooms: np.ndarray, t: np.ndarray | float) -> np.ndarray:
        """Global segment index of each room's current segment at t (clipped to the room's span)."""
        rooms = np.asarray(rooms)
        local = np.floor((t - self.room_start[rooms]) / self.config.segment_seconds).astype(np.int64)
        local = np.clip(local, 0, self.room_n_segments[rooms] - 1)
        return self.room_seg_offset[rooms] + local

    def segment(self, i: int) -> Segment:
        prod = int(self.seg_product[i])
        topic = "chat" if prod < 0 else self.products[prod].category
        return Segment(int(self.seg_room[i]), int(self.seg_index[i]), float(self.seg_start[i]), self._seg_text[i], prod, topic)

    def _check_live(self, viewers: np.ndarray, rooms: np.ndarray, times: np.ndarray) -> None:
        bad = np.flatnonzero((viewers < 0) | (viewers >= self.config.n_viewers))
        if len(bad):
            raise DataError(f"viewer {viewers[bad[0]]} does not exist (expected 0..{self.config.n_viewers - 1})")
        bad = np.flatnonzero((rooms < 0) | (rooms >= self.n_rooms))
        if len(bad):
            raise DataError(f"room {rooms[bad[0]]} does not exist (expected 0..{self.n_rooms - 1})")
        bad = np.flatnonzero((times < self.room_start[rooms]) | (times >= self.room_end[rooms]))
        if len(bad):
            i = bad[0]
            raise DataError(f"room {rooms[i]} is not live at t={times[i]:.0f} "
                            f"(live {self.room_start[rooms[i]]:.0f}..{self.room_end[rooms[i]]:.0f})")

    # ------------------------------------------------------------------------------------
    # feedback model: the ground truth

    def _feedback(self, v: np.ndarray, r: np.ndarray, t: np.ndarray, watches: np.ndarray | None = None,
                  follows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per-impression probabilities and means, each [N]. Conditional on a click except `click`.

        `watches`/`follows` ([N]) replace the world's own state (past watches of the room's streamer
        by the viewer, follow flag) when given: an A/B test replays a logged moment.
        """
        c = self.config
        s = self.room_streamer[r]
        seg = self.segment_index(r, t)
        prod = self.seg_product[seg]
        match = np.einsum("nd,nd->n", self.taste[v], self.seg_vectors[seg])  # [N]
        fam = np.log1p(self.familiarity[v, s] if watches is None else np.asarray(watches, dtype=np.float64))
        fol = self.follows[v, s] if follows is None else np.asarray(follows, dtype=bool)
        p_click = _sigmoid(c.click_bias + c.click_match * match + c.click_popularity * self.log_popularity[s]
                           + c.click_familiarity * fam + c.click_follow * fol)
        remaining = np.maximum(self.room_end[r] - t - 1.0, 0.0)
        mean_w = c.mean_watch_seconds * np.exp(c.watch_match * match + 0.3 * fam)
        has_product = prod >= 0
        return {
            "click": p_click,
            "watch_mean": mean_w,  # before the cap at the room's end
            "watch": mean_w * (1.0 - np.exp(-remaining / mean_w)),  # E[min(Exp(mean), remaining)]
            "remaining": remaining,
            "like": _sigmoid(-1.5 + 2.5 * match),
            "comment": _sigmoid(-2.5 + 2.0 * match + 0.3 * fam),
            "share": _sigmoid(-4.0 + 2.0 * match),
            "follow": np.where(fol, 0.0, _sigmoid(-3.5 + 2.5 * match + 0.5 * fam)),
            "gift": _sigmoid(-4.5 + 1.5 * match + self.gift_propensity[v]),
            "gift_mean": 5.0 * np.exp(0.5 * np.maximum(self.gift_propensity[v], 0)),
            "purchase": np.where(has_product & self.product_in_stock[np.maximum(prod, 0)],
                                 _sigmoid(-3.0 + 3.0 * match + self.buy_propensity[v]), 0.0),
            "price": np.where(has_product, self.product_unit_price[np.maximum(prod, 0)], 0.0),
            "product": prod,
            "streamer": s,
        }

    def expected(self, viewers: np.ndarray, rooms: np.ndarray, t: np.ndarray | float,
                 watches: np.ndarray | None = None, follows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Expected feedback of showing room r to viewer v at time t (one impression), each [N].

        Keys: click, watch_minutes, like, comment, share, follow, gift, gift_value, purchase, gmv.
        `watches`/`follows` ([N]) stand in for the world's state, as in `_feedback`.
        """
        v, r = np.asarray(viewers, dtype=np.int64), np.asarray(rooms, dtype=np.int64)
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), v.shape)
        self._check_live(v, r, t)
        f = self._feedback(v, r, t, watches, follows)
        pc = f["click"]
        return {
            "click": pc,
            "watch_minutes": pc * f["watch"] / 60.0,
            "like": pc * f["like"],
            "comment": pc * f["comment"],
            "share": pc * f["share"],
            "follow": pc * f["follow"],
            "gift": pc * f["gift"],
            "gift_value": pc * f["gift"] * f["gift_mean"],
            "purchase": pc * f["purchase"],
            "gmv": pc * f["purchase"] * f["price"],
        }

    def utility(self, viewers: np.ndarray, rooms: np.ndarray, t: np.ndarray | float,
                weights: Mapping[str, float] | None = None, watches: np.ndarray | None = None,
                follows: np.ndarray | None = None) -> np.ndarray:
        """Weighted sum of `expected` (default `DEFAULT_UTILITY_WEIGHTS`), [N]."""
        return weighted_sum(self.expected(viewers, rooms, t, watches, follows), weights)

    # ------------------------------------------------------------------------------------
    # behaviour

    def respond(self, viewer: int, room: int, t: float) -> list:
        """Show `room` to `viewer` at time `t` and draw the feedback (as Event records).

        Updates familiarity and follows, so later responses see the consequences.
        """
        batch, _ = self.respond_batch(np.array([viewer]), np.array([room]), np.array([float(t)]))
        return batch.records()

    def respond_batch(self, viewers: np.ndarray, rooms: np.ndarray, times: np.ndarray,
                      rng: np.random.Generator | None = None) -> tuple[EventBatch, list[Question]]:
        """Vectorised `respond` for N impressions: (events, questions asked)."""
        v = np.asarray(viewers, dtype=np.int64)
        r = np.asarray(rooms, dtype=np.int64)
        t = np.asarray(times, dtype=np.float64)
        self._check_live(v, r, t)
        return self._draw(v, r, t, self.rng if rng is None else rng)

    def _draw(self, v: np.ndarray, r: np.ndarray, t: np.ndarray,
              rng: np.random.Generator) -> tuple[EventBatch, list[Question]]:
        n = len(v)
        f = self._feedback(v, r, t)
        u = rng.random((n, 8))
        click = u[:, 0] < f["click"]
        watch = np.minimum(rng.exponential(f["watch_mean"]), f["remaining"])
        watch = np.where(click, np.maximum(np.floor(watch), 1.0), 0.0)
        # engagement happens at a uniform moment of the watch, so inside the live window
        t_eng = t + np.floor(u[:, 7] * watch)
        gift_value = np.round(rng.lognormal(np.log(f["gift_mean"]), 0.7), 0) + 1
        parts: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]] = [
            (np.arange(n), K[EventKind.IMPRESSION], t, np.zeros(n)),
        ]
        ci = np.flatnonzero(click)
        parts.append((ci, K[EventKind.CLICK], t[ci], np.zeros(len(ci))))
        parts.append((ci, K[EventKind.WATCH], t[ci], watch[ci]))
        for col, kind in ((1, EventKind.LIKE), (2, EventKind.COMMENT), (3, EventKind.SHARE), (4, EventKind.FOLLOW)):
            idx = np.flatnonzero(click & (u[:, col] < f[kind.value]))
            parts.append((idx, K[kind], t_eng[idx], np.zeros(len(idx))))
        gi = np.flatnonzero(click & (u[:, 5] < f["gift"]))
        parts.append((gi, K[EventKind.GIFT], t_eng[gi], gift_value[gi]))
        bi = np.flatnonzero(click & (u[:, 6] < f["purchase"]))
        parts.append((bi, K[EventKind.PURCHASE], t_eng[bi], f["price"][bi]))
        idx = np.concatenate([p[0] for p in parts])
        batch = EventBatch(
            v[idx], r[idx], np.concatenate([p[2] for p in parts]),
            np.concatenate([np.full(len(p[0]), p[1]) for p in parts]), np.concatenate([p[3] for p in parts]),
        )
        # state: familiarity grows with every watch, follows stick
        s = f["streamer"]
        np.add.at(self.familiarity, (v[ci], s[ci]), 1.0)
        fo = parts[6][0]
        self.follows[v[fo], s[fo]] = True
        questions = self._questions(v[ci], r[ci], t_eng[ci], rng)
        return batch, questions

    def _questions(self, v: np.ndarray, r: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> list[Question]:
        """Some watchers ask about the product on the card at the moment they ask."""
        prod = self.seg_product[self.segment_index(r, t)]
        asked = np.flatnonzero((prod >= 0) & (rng.random(len(v)) < self.config.question_rate))
        out = []
        for i in asked:
            kind = QUESTION_KINDS[rng.integers(len(QUESTION_KINDS))]
            text, gold = ask(self.products[prod[i]], kind, rng)
            out.append(Question(self._next_question, int(v[i]), int(r[i]), float(t[i]), int(prod[i]), kind, text, gold))
            self._next_question += 1
        return out

    def _logging_policy(self, active: np.ndarray, t_visit: np.ndarray, candidates: np.ndarray,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k live rooms per visit by popularity, familiarity, follows and a noisy taste match."""
        c = self.config
        s = self.room_streamer[candidates]  # [L]
        A, L = len(active), len(candidates)
        seg = self.segment_index(np.broadcast_to(candidates, (A, L)), t_visit[:, None])  # [A, L]
        match = np.einsum("ad,ald->al", self.taste[active], self.seg_vectors[seg])
        score = (self.log_popularity[s][None, :] + 1.5 * np.log1p(self.familiarity[active][:, s])
                 + 2.0 * self.follows[active][:, s] + c.policy_match_weight * match + rng.gumbel(size=(A, L)))
        live = (self.room_start[candidates][None, :] <= t_visit[:, None]) & (t_visit[:, None] < self.room_end[candidates][None, :])
        score = np.where(live, score, -np.inf)
        k = min(c.impressions_per_visit, L)
        top = np.argpartition(-score, k - 1, axis=1)[:, :k]  # [A, k]
        keep = np.isfinite(np.take_along_axis(score, top, axis=1)).ravel()
        v = np.repeat(active, k)[keep]
        r = candidates[top].ravel()[keep]
        t = np.repeat(t_visit, k)[keep]
        return v, r, t

    def simulate(self, progress: Callable[[int, int], None] | None = None) -> WorldData:
        """Run the logging policy over the whole horizon and return the world with its log."""
        c = self.config
        rng = self.rng
        n_steps = math.ceil(c.days * DAY / c.step_seconds)
        norm = np.i0(1.5)  # mean of exp(1.5 cos θ) over a day: keeps visits_per_day the daily mean
        batches: list[EventBatch] = []
        questions: list[Question] = []
        for step in range(n_steps):
            t0 = c.start_time + step * c.step_seconds
            hour = ((t0 - c.start_time) / 3600.0) % 24
            rhythm = np.exp(1.5 * np.cos(2 * np.pi * (hour - self.viewer_hour) / 24)) / norm
            p_visit = np.minimum(self.viewer_visits * c.step_seconds / DAY * rhythm, 1.0)
            active = np.flatnonzero(rng.random(c.n_viewers) < p_visit)
            candidates = np.flatnonzero((self.room_start < t0 + c.step_seconds) & (self.room_end > t0))
            if len(active) and len(candidates):
                t_visit = t0 + np.floor(rng.random(len(active)) * c.step_seconds)
                v, r, t = self._logging_policy(active, t_visit, candidates, rng)
                if len(v):
                    batch, qs = self._draw(v, r, t, rng)
                    batches.append(batch)
                    questions.extend(qs)
            if progress is not None:
                progress(step + 1, n_steps)
        events = EventBatch.concat(batches).sorted_by_time()
        return WorldData(
            streamers=records_to_table(self.streamers, Streamer),
            rooms=self.rooms_table(),
            segments=self.segments_table(),
            products=records_to_table(self.products, Product),
            viewers=records_to_table(self.viewers(), Viewer),
            events=events.to_arrow(),
            questions=records_to_table(questions, Question),
            meta={"source": "simulator", "config": asdict(c)},
        )

    # ------------------------------------------------------------------------------------
    # tables

    def viewers(self) -> list[Viewer]:
        return [Viewer(i, float(self.viewer_hour[i]), float(self.viewer_visits[i]), CATEGORY_NAMES[self.viewer_category[i]])
                for i in range(self.config.n_viewers)]

    def rooms_table(self) -> pa.Table:
        titles = [f"{self.streamers[s].name} live: {self.streamers[s].category} picks" for s in self.room_streamer]
        return pa.table({
            "id": np.arange(self.n_rooms), "streamer": self.room_streamer,
            "start_time": self.room_start, "end_time": self.room_end, "title": titles,
        })

    def segments_table(self) -> pa.Table:
        cats = np.array(CATEGORY_NAMES + ("chat",), dtype=object)
        topic_idx = np.where(self.seg_product >= 0, self.product_category[np.maximum(self.seg_product, 0)], len(CATEGORY_NAMES))
        return pa.table({
            "room": self.seg_room, "index": self.seg_index, "start_time": self.seg_start,
            "text": self._seg_text, "product": self.seg_product, "topic": cats[topic_idx].tolist(),
        })


def simulate_world(config: WorldConfig, progress: Callable[[int, int], None] | None = None) -> WorldData:
    """Build a world from `config` and simulate its whole horizon."""
    return LiveWorld(config).simulate(progress)
