import dataclasses

import numpy as np
import pytest

from livemind.errors import DataError
from livemind.rec.tokenizer.dynamic import DynamicTokenizer, EncoderConfig
from livemind.rec.tokenizer.fit import TokenizerConfig, fit_or_load, fit_tokenizer, tenths
from livemind.rec.tokenizer.fusion import FusionConfig
from livemind.rec.tokenizer.report import evaluate_tokenizer, plot_report
from livemind.rec.tokenizer.rq import ResidualQuantizer, RQConfig
from livemind.world.schema import Segment

FAST = TokenizerConfig(
    encoder=EncoderConfig(kind="hashing", dim=128),
    fusion=FusionConfig(hidden_dim=32, out_dim=16),
    rq=RQConfig(levels=2, codebook_size=16, n_iter=10),
    epochs=3, batch_size=64, lr=3e-3,
)


@pytest.fixture(scope="module")
def fitted(tiny_world):
    world, data = tiny_world
    split = world.config.start_time + 20.5 * 3600
    return fit_tokenizer(data, dataclasses.replace(FAST, train_until=split)), split


def test_fit_lowers_the_loss_and_learns_a_gate(fitted):
    result, _ = fitted
    losses = result.losses
    assert len(losses) > 20
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2
    assert 0.0 < result.lam < 1.0 and result.n_positives > 300
    assert result.tokenizer.quantizer.centroids.shape == (2, 16, 16)


def _segments(data, room, n):
    rows = [r for r in data.segments.to_pylist() if r["room"] == room][:n]
    return [Segment(r["room"], r["index"], r["start_time"], r["text"], r["product"], r["topic"]) for r in rows]


def test_updates_follow_room_lifecycle_and_reject_bad_segments(fitted, tiny_world):
    tok = fitted[0].tokenizer
    tok.reset()
    _, data = tiny_world
    segs = _segments(data, 0, 5)
    streamer = int(data.rooms.column("streamer")[0].as_py())
    with pytest.raises(DataError, match="segment for unknown room 0: start_room it first"):
        tok.update(segs[0])
    tok.start_room(0, streamer)
    sid = tok.update(segs[0])
    assert len(sid) == 2 and all(0 <= c < 16 for c in sid)
    assert tok.index.sid_of(0) == sid
    before = tok.index.snapshot()
    state = (tok._rooms[0].n, tok._rooms[0].last_index, tok._rooms[0].pool_sum.copy())
    bad = [dataclasses.replace(segs[1], text=""), dataclasses.replace(segs[1], text="y" * 5000), segs[0]]
    messages = ["segment text is empty", "segment text has 5000 characters", "segment 0 of room 0 arrives after segment 0"]
    for seg, msg in zip(bad, messages):
        with pytest.raises(DataError, match=msg):
            tok.update(seg)
        assert tok.index.snapshot() is before
        assert (tok._rooms[0].n, tok._rooms[0].last_index) == state[:2]
        assert np.array_equal(tok._rooms[0].pool_sum, state[2])
    with pytest.raises(DataError, match="room 0 is already live"):
        tok.start_room(0, streamer)
    tok.end_room(0)
    assert 0 not in tok.index
    with pytest.raises(DataError, match="segment for room 0, which has ended"):
        tok.update(segs[1])
    with pytest.raises(DataError, match="room 0 has ended; room ids are not reused"):
        tok.start_room(0, streamer)


def test_batched_updates_equal_one_by_one(fitted, tiny_world):
    tok = fitted[0].tokenizer
    _, data = tiny_world
    segs = _segments(data, 1, 4) + _segments(data, 2, 4)
    streamers = {r["id"]: r["streamer"] for r in data.rooms.to_pylist()}
    tok.reset()
    for room in (1, 2):
        tok.start_room(room, streamers[room])
    one_by_one = [tok.update(s) for s in segs]
    tok.reset()
    for room in (1, 2):
        tok.start_room(room, streamers[room])
    assert tok.update_many(segs) == one_by_one


def test_a_room_saved_and_restored_elsewhere_goes_on_with_the_same_sids(fitted, tiny_world):
    tok = fitted[0].tokenizer
    _, data = tiny_world
    segs = _segments(data, 1, 6)
    streamer = int(data.rooms.column("streamer")[1].as_py())
    tok.reset()
    tok.start_room(1, streamer)
    straight = tok.update_many(segs)
    tok.reset()
    tok.start_room(1, streamer)
    first = tok.update_many(segs[:3])
    saved = tok.save_room(1)
    assert (saved.n, saved.last_index, saved.sid) == (3, segs[2].index, first[-1])
    tok.reset()  # another process: nothing of room 1 but what was saved
    assert tok.save_room(1) is None
    tok.restore_room(1, saved)
    assert first + tok.update_many(segs[3:]) == straight


def test_save_load_same_version_same_sids(fitted, tiny_world, tmp_path):
    tok = fitted[0].tokenizer
    _, data = tiny_world
    tok.save(tmp_path / "tok")
    back = DynamicTokenizer.load(tmp_path / "tok")
    assert back.version == tok.version and back.version.startswith("tok-")
    segs = _segments(data, 3, 6)
    streamer = int(data.rooms.column("streamer")[3].as_py())
    for t in (tok, back):
        t.reset()
        t.start_room(3, streamer)
    assert [tok.update(s) for s in segs] == [back.update(s) for s in segs]


def test_codebook_swaps_are_checked(fitted, tiny_world, tmp_path):
    fitted[0].tokenizer.save(tmp_path / "copy")
    tok = DynamicTokenizer.load(tmp_path / "copy")  # swapping codebooks must not touch the shared fixture
    _, data = tiny_world
    tok.reset()
    streamer = int(data.rooms.column("streamer")[4].as_py())
    tok.start_room(4, streamer)
    for s in _segments(data, 4, 3):
        tok.update(s)
    version, snap = tok.version, tok.index.snapshot()
    rng = np.random.default_rng(0)
    other_dim = ResidualQuantizer(RQConfig(levels=2, codebook_size=16)).fit(rng.normal(size=(200, 8)).astype(np.float32))
    other_dim.save(tmp_path / "dim8.safetensors", {"tower_version": tok.tower_version})
    with pytest.raises(DataError, match="codebook dimension 8 does not match the room tower's output 16"):
        tok.load_codebook(tmp_path / "dim8.safetensors")
    other_tower = ResidualQuantizer(RQConfig(levels=2, codebook_size=16)).fit(rng.normal(size=(200, 16)).astype(np.float32))
    other_tower.save(tmp_path / "other.safetensors", {"tower_version": "tower-000000000000"})
    with pytest.raises(DataError, match="codebook was trained for room tower tower-000000000000"):
        tok.load_codebook(tmp_path / "other.safetensors")
    assert tok.version == version and tok.index.snapshot() is snap
    other_tower.save(tmp_path / "new.safetensors", {"tower_version": tok.tower_version})
    new_version = tok.load_codebook(tmp_path / "new.safetensors")
    assert new_version != version and tok.index.version == new_version
    assert tok.index.sid_of(4) == tuple(other_tower.encode(tok._rooms[4].vector[None])[0].tolist())


def test_tampered_weights_are_refused(fitted, tmp_path):
    from safetensors.torch import load_file, save_file

    tok = fitted[0].tokenizer
    tok.save(tmp_path / "tok")
    weights = load_file(str(tmp_path / "tok" / "room_tower.safetensors"))
    weights["head.2.bias"] = weights["head.2.bias"] + 1.0
    save_file(weights, str(tmp_path / "tok" / "room_tower.safetensors"))
    with pytest.raises(DataError, match="do not match tower version"):
        DynamicTokenizer.load(tmp_path / "tok")
    with pytest.raises(DataError, match="no tokenizer.json"):
        DynamicTokenizer.load(tmp_path)


@pytest.mark.slow
def test_report_measures_the_held_out_window(fitted, tiny_world, tmp_path):
    result, split = fitted
    _, data = tiny_world
    report = evaluate_tokenizer(result.tokenizer, data, start=split)
    n_held_out = int(np.sum(data.segments.column("start_time").to_numpy() >= split))
    assert report.n_segments == n_held_out > 100
    assert all(0 < u <= 1 for u in report.utilisation)
    assert report.reconstruction_error[0] > report.reconstruction_error[1] > 0
    assert 0 <= report.collision_rate <= 1 and 0 <= report.churn_changed <= 1 and 0 <= report.stable_unchanged <= 1
    assert report.n_changed > 0 and report.n_unchanged > 0 and report.update_p99_ms > 0
    png = plot_report(report, tmp_path / "r.png", result.losses)
    assert png.stat().st_size > 10_000 and (tmp_path / "r_loss.png").is_file()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="feedback weights must be non-negative and not all zero"):
        TokenizerConfig(w_watch=0, w_comment=0, w_gift=0, w_follow=0, w_purchase=0)
    with pytest.raises(ValueError, match="gate must be 'scalar' or 'vector'"):
        FusionConfig(gate="matrix")
    with pytest.raises(ValueError, match="not both zero"):
        TokenizerConfig(content_weight=0, behaviour_weight=0)
    with pytest.raises(ValueError, match="content_key must be 'card' or 'topic', got 'shop'"):
        TokenizerConfig(content_key="shop")
    with pytest.raises(ValueError, match=r"max_steps must be >= 0 \(0 = no cap\), got -1"):
        TokenizerConfig(max_steps=-1)


def test_max_steps_ends_training_early_on_the_same_path(fitted, tiny_world, tmp_path):
    world, data = tiny_world
    full, split = fitted
    capped = fit_tokenizer(data, dataclasses.replace(FAST, train_until=split, max_steps=7))
    assert len(capped.losses) == 7 < len(full.losses)
    np.testing.assert_allclose(capped.losses, full.losses[:7], rtol=1e-5)  # the same steps, stopped early
    beyond = fit_tokenizer(data, dataclasses.replace(FAST, train_until=split, max_steps=10 ** 6))
    assert len(beyond.losses) == len(full.losses)  # a cap above the epochs' steps changes nothing
    for cfg in (FAST, dataclasses.replace(FAST, max_steps=7)):  # a capped fit is cached apart from a full one
        fit_or_load(data, dataclasses.replace(cfg, train_until=split), world.config, tmp_path, log=lambda _: None)
    assert len(list(tmp_path.glob("tokenizer-*/tokenizer.json"))) == 2


@pytest.mark.parametrize("by", ["card", "topic"])
def test_content_pairs_share_the_card_or_its_topic(tiny_world, by):
    from livemind.rec.data.segments import SegmentFrame
    from livemind.rec.tokenizer.fit import CardPairs

    frame = SegmentFrame.from_world(tiny_world[1])
    anchor, partner = CardPairs(frame, np.arange(len(frame)), by).pairs(500, np.random.default_rng(0))
    assert not np.any(anchor == partner)
    product = frame.product[anchor] >= 0
    assert np.array_equal(frame.product[partner] >= 0, product)
    chat = ~product  # chat pairs stay within one room whatever the key
    assert np.array_equal(frame.room[anchor[chat]], frame.room[partner[chat]])
    assert np.array_equal(frame.topic[anchor], frame.topic[partner])
    same_card = frame.product[anchor[product]] == frame.product[partner[product]]
    if by == "card":
        assert same_card.all()
    else:  # other products of the same topic are partners too
        assert 0 < same_card.mean() < 1


def test_a_sid_layout_puts_the_topic_first_and_the_streamer_last(fitted, tiny_world, tmp_path):
    from livemind.rec.data.segments import SegmentFrame
    from livemind.rec.data.watch import segment_codes
    from livemind.rec.tokenizer.dynamic import SidLayout
    from livemind.rec.tokenizer.fit import laid_out

    world, data = tiny_world
    plain = fitted[0].tokenizer
    cfg = dataclasses.replace(FAST, train_until=fitted[1], sid=SidLayout(topic=True, identity_digits=2))
    tok = laid_out(plain, data, cfg)
    assert laid_out(plain, data, dataclasses.replace(cfg, sid=SidLayout())) is plain
    assert tok.levels == 5 and tok.content_levels == slice(1, 3) and tok.version != plain.version
    assert tok.topics == tuple(sorted(set(SegmentFrame.from_world(data).topic.astype(str))))
    cv = tok.code_vectors
    assert cv.shape == (5, 16, 16) and not cv[0].any() and not cv[3:].any()
    assert np.array_equal(cv[1:3], plain.quantizer.centroids)

    frame = SegmentFrame.from_world(data)
    codes, before = segment_codes(tok, frame), segment_codes(plain, frame)
    assert np.array_equal(codes[:, 1:3], before)  # the residual codes are the plain tokenizer's
    assert [tok.topics[c] for c in codes[:, 0]] == list(frame.topic.astype(str))
    assert np.array_equal(codes[:, 3] * 16 + codes[:, 4], frame.streamer)  # streamer ids < 256: two base-16 digits

    # online, a segment gets the SID it has offline; an unknown topic gets the code after the last
    segs = _segments(data, 1, 4)
    streamer = int(data.rooms.column("streamer")[1].as_py())
    tok.start_room(1, streamer)
    online = tok.update_many(segs)
    rows = [int(np.flatnonzero((frame.room == 1) & (frame.index == s.index))[0]) for s in segs]
    assert online == [tuple(int(c) for c in codes[r]) for r in rows]
    odd = dataclasses.replace(_segments(data, 1, 5)[4], topic="a topic never seen")
    assert tok.update(odd)[0] == len(tok.topics)
    with pytest.raises(DataError, match="give each segment's topic"):
        tok.update_vectors([1], [99], np.zeros((1, tok.encoder.dim), dtype=np.float32))

    tok.save(tmp_path / "laid")
    back = DynamicTokenizer.load(tmp_path / "laid")
    assert (back.version, back.layout, back.topics) == (tok.version, tok.layout, tok.topics)
    with pytest.raises(ValueError, match="identity_digits must be non-negative, got -1"):
        SidLayout(identity_digits=-1)


def test_a_long_fit_reports_each_stage_by_tenths():
    lines: list[str] = []
    report = tenths(lines.append)
    for i in range(101):
        report("training room tower", i, 100)
    report("fitting codebooks", 1, 3)
    assert lines == [f"tokenizer: training room tower {i}/100" for i in range(0, 101, 10)] + [
        "tokenizer: fitting codebooks 1/3"]
