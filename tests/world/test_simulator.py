import dataclasses
import json

import numpy as np
import pyarrow.compute as pc
import pytest

from livemind.config import from_dict, load_config
from livemind.errors import ConfigError, DataError
from livemind.world.schema import Product, table_to_records
from livemind.world.simulator import LiveWorld, WorldConfig
from tests.conftest import TINY


def test_same_seed_same_world_other_seed_other_world(tiny_world):
    _, data = tiny_world
    again = LiveWorld(TINY).simulate()
    for name in ("rooms", "segments", "events", "questions"):
        assert again.table(name).equals(data.table(name)), name
    other = LiveWorld(dataclasses.replace(TINY, seed=4)).simulate()
    assert not other.events.equals(data.events)


def test_only_live_rooms_get_events(tiny_world):
    world, data = tiny_world
    ev = data.event_batch()
    assert len(ev) > 5000
    assert np.all(world.room_start[ev.room] <= ev.time)
    assert np.all(ev.time < world.room_end[ev.room])


def test_every_segment_changes_content_and_products_switch(tiny_world):
    world, data = tiny_world
    seg = data.segments.to_pydict()
    same_room = np.diff(np.array(seg["room"])) == 0
    texts = seg["text"]
    assert all(texts[i] != texts[i + 1] for i in np.flatnonzero(same_room))
    product = np.array(seg["product"])
    switch_rate = np.mean(product[1:][same_room] != product[:-1][same_room])
    # a new content run starts with probability 1/6; it keeps the same product (or chat) sometimes
    assert 0.08 < switch_rate < 1 / 6
    # a room's topic is not fixed: most rooms show more than one category over their life
    topics = {}
    for r, t in zip(seg["room"], seg["topic"]):
        topics.setdefault(r, set()).add(t)
    assert np.mean([len(t) > 1 for t in topics.values()]) > 0.8


def test_gold_answers_match_product_facts(tiny_world):
    _, data = tiny_world
    products = {p.id: p for p in table_to_records(data.products, Product)}
    questions = data.questions.to_pylist()
    assert len(questions) > 20
    kinds = set()
    for q in questions:
        p, gold = products[q["product"]], json.loads(q["gold"])
        kinds.add(q["kind"])
        assert p.name in q["text"]
        if q["kind"] == "price":
            assert gold["total"] == p.quote(1)["total"]
        elif q["kind"] == "bundle":
            assert gold["total"] == p.quote(gold["qty"])["total"]
        elif q["kind"] == "stock":
            assert gold == {"stock": p.stock, "in_stock": p.stock > 0}
        elif q["kind"] == "shipping":
            assert gold["ship_days"] == p.ship_days and gold["ship_fee"] == p.ship_fee
        elif q["kind"] == "returns":
            assert gold["return_days"] == p.return_days
        elif q["kind"] == "material":
            assert gold["materials"] == list(p.materials)
        elif q["kind"] == "size":
            assert gold["sizes"] == list(p.sizes)
        elif q["kind"] == "spec":
            assert p.specs[gold["spec"]] == gold["value"]
    assert kinds == {"price", "bundle", "stock", "shipping", "returns", "material", "size", "spec"}


def test_questions_are_about_the_product_on_the_card(tiny_world):
    world, data = tiny_world
    q = data.questions
    seg = world.segment_index(q.column("room").to_numpy(), q.column("time").to_numpy())
    assert np.array_equal(world.seg_product[seg], q.column("product").to_numpy())


def test_tracking_current_content_beats_knowing_the_room(tiny_world):
    """An oracle ranking by the current segment beats one using the room's average content."""
    world, _ = tiny_world
    rng = np.random.default_rng(0)
    room_mean = np.zeros((world.n_rooms, world.config.latent_dim))
    np.add.at(room_mean, world.seg_room, world.seg_vectors)
    room_mean /= world.room_n_segments[:, None]
    current, static = [], []
    for t in rng.uniform(world.config.start_time + 18 * 3600, world.config.end_time - 3600, size=40):
        live = world.live_rooms(t)
        if len(live) < 5:
            continue
        for v in rng.integers(0, world.config.n_viewers, size=20):
            truth = world.expected(np.full(len(live), v), live, t)["click"]
            seg = world.segment_index(live, t)
            current.append(truth[np.argmax(world.seg_vectors[seg] @ world.taste[v])])
            static.append(truth[np.argmax(room_mean[live] @ world.taste[v])])
    assert len(current) > 200
    assert np.mean(current) > 1.15 * np.mean(static)


def test_respond_draws_feedback_and_updates_state():
    world = LiveWorld(TINY)
    t = world.room_start[0] + 60
    assert 0 in world.live_rooms(t)
    events = []
    for v in range(200):
        events += world.respond(v, 0, t)
    kinds = [e.kind.value for e in events]
    assert kinds.count("impression") == 200
    clicks = kinds.count("click")
    assert clicks == kinds.count("watch") > 0
    s = world.room_streamer[0]
    assert world.familiarity[:, s].sum() == clicks
    assert all(world.room_start[0] <= e.time < world.room_end[0] for e in events)


def test_respond_rejects_rooms_that_are_not_live():
    world = LiveWorld(TINY)
    with pytest.raises(DataError, match=r"room 0 is not live at t=\d+"):
        world.respond(0, 0, world.room_end[0])
    with pytest.raises(DataError, match="room 99999 does not exist"):
        world.respond(0, 99999, world.room_start[0])
    with pytest.raises(DataError, match="viewer -1 does not exist"):
        world.expected(np.array([-1]), np.array([0]), world.room_start[0])


def test_expected_and_utility_are_consistent():
    world = LiveWorld(TINY)
    t = world.room_start[0] + 30
    exp = world.expected(np.arange(10), np.zeros(10, dtype=int), t)
    assert np.all((exp["click"] > 0) & (exp["click"] < 1))
    assert np.allclose(world.utility(np.arange(10), np.zeros(10, dtype=int), t, {"click": 2.0}), 2 * exp["click"])
    with pytest.raises(DataError, match="unknown utility objective"):
        world.utility(np.arange(2), np.zeros(2, dtype=int), t, {"clicks": 1.0})


def test_config_rejects_bad_values_and_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match="n_viewers must be at least 1, got 0"):
        WorldConfig(n_viewers=0)
    with pytest.raises(ValueError, match="chat_fraction must be in"):
        WorldConfig(chat_fraction=1.5)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['viewers'\]"):
        from_dict(WorldConfig, {"viewers": 3})
    bad = tmp_path / "w.yaml"
    bad.write_text("n_streamers: -2\n")
    with pytest.raises(ConfigError, match="n_streamers must be at least 1, got -2"):
        load_config(bad, WorldConfig)


def test_event_counts_by_kind_are_plausible(tiny_world):
    _, data = tiny_world
    kinds = data.events.column("kind")
    n = {k: pc.sum(pc.equal(kinds, k)).as_py() for k in ("impression", "click", "watch", "purchase")}
    assert n["click"] == n["watch"]
    assert 0.05 < n["click"] / n["impression"] < 0.4
    assert n["purchase"] > 0
