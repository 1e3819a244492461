import numpy as np
import pytest

from livemind.errors import DataError
from livemind.rec.tokenizer.rq import ResidualQuantizer, RQConfig, balanced_assign


def test_reconstruction_improves_with_each_level():
    x = np.random.default_rng(0).normal(size=(3000, 16)).astype(np.float32)
    q = ResidualQuantizer(RQConfig(levels=3, codebook_size=32, seed=1)).fit(x)
    err = q.reconstruction_error(x)
    assert len(err) == 3
    assert 1.0 > err[0] > err[1] > err[2] > 0.0


def test_planted_two_level_clusters_are_recovered_exactly():
    rng = np.random.default_rng(2)
    c1 = rng.normal(size=(8, 6)) * 10.0  # level 1: far apart
    c2 = rng.normal(size=(8, 6)) * 1.0  # level 2: offsets, much smaller than the level-1 gaps
    a, b = np.repeat(np.arange(8), 64), np.tile(np.arange(8), 64)
    x = (c1[a] + c2[b] + rng.normal(scale=0.01, size=(512, 6))).astype(np.float32)
    q = ResidualQuantizer(RQConfig(levels=2, codebook_size=8, seed=0)).fit(x)
    codes = q.encode(x)
    for planted, learned in ((a, codes[:, 0]), (b, codes[:, 1])):
        pairs = set(zip(planted.tolist(), learned.tolist()))
        assert len(pairs) == 8  # a bijection: each planted cluster has exactly one code, and vice versa
        assert len({p for p, _ in pairs}) == len({c for _, c in pairs}) == 8
    assert q.reconstruction_error(x)[-1] < 1e-5


def test_balanced_assignment_respects_capacity():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(size=(900, 4)), rng.normal(size=(100, 4)) + 20]).astype(np.float32)
    centroids = np.concatenate([rng.normal(size=(2, 4)), rng.normal(size=(8, 4)) + 20]).astype(np.float32)
    assign = balanced_assign(x, centroids, capacity=110, candidates=10)
    counts = np.bincount(assign, minlength=10)
    assert counts.sum() == 1000 and counts.max() <= 110
    with pytest.raises(DataError, match="cannot hold 1000 vectors"):
        balanced_assign(x, centroids, capacity=50)


def test_balanced_fit_uses_more_codes_on_skewed_data():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(size=(1900, 8)) * 0.1, rng.normal(size=(100, 8)) * 5]).astype(np.float32)
    used = {}
    for balanced in (False, True):
        q = ResidualQuantizer(RQConfig(levels=1, codebook_size=64, balanced=balanced, seed=0)).fit(x)
        counts = np.bincount(q.encode(x)[:, 0], minlength=64)
        p = counts[counts > 0] / counts.sum()
        used[balanced] = float(np.exp(-(p * np.log(p)).sum()))  # perplexity
    assert used[True] > used[False]


def test_hysteresis_keeps_a_near_code_and_switches_on_a_far_move():
    q = ResidualQuantizer(RQConfig(levels=1, codebook_size=2), centroids=np.array([[[0.0, 0.0], [1.0, 0.0]]], np.float32))
    x = np.array([[0.55, 0.0]], np.float32)  # nearest is code 1 (0.45 away); code 0 is 0.55 away
    assert q.encode(x)[0, 0] == 1
    assert q.encode(x, previous=np.array([[0]]), sticky=0.3)[0, 0] == 0  # 0.55 <= 1.3 * 0.45
    assert q.encode(x, previous=np.array([[0]]), sticky=0.1)[0, 0] == 1  # 0.55 > 1.1 * 0.45
    far = np.array([[1.0, 0.0]], np.float32)
    assert q.encode(far, previous=np.array([[0]]), sticky=0.5)[0, 0] == 1
    assert q.encode(x, previous=np.array([[-1]]), sticky=0.3)[0, 0] == 1  # no previous code


def test_save_load_round_trip_and_bad_files(tmp_path):
    x = np.random.default_rng(0).normal(size=(500, 8)).astype(np.float32)
    q = ResidualQuantizer(RQConfig(levels=2, codebook_size=16)).fit(x)
    q.save(tmp_path / "cb.safetensors", {"tower_version": "t1"})
    back, meta = ResidualQuantizer.load(tmp_path / "cb.safetensors")
    assert np.array_equal(back.centroids, q.centroids) and meta["tower_version"] == "t1" and meta["dim"] == 8
    assert np.array_equal(back.encode(x), q.encode(x))
    with pytest.raises(DataError, match="does not exist"):
        ResidualQuantizer.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="not a safetensors codebook"):
        ResidualQuantizer.load(tmp_path / "junk.safetensors")
    with pytest.raises(DataError, match="vectors have dimension 3, the codebook expects 8"):
        q.encode(np.zeros((2, 3), np.float32))
    with pytest.raises(DataError, match="need a \\(N, D\\) array with N >= 16"):
        ResidualQuantizer(RQConfig(levels=1, codebook_size=16)).fit(x[:10])
