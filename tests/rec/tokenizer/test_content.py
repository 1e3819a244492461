import numpy as np
import pytest

from livemind.errors import DataError
from livemind.rec.tokenizer.content import (
    EmbeddingCache,
    HashingEncoder,
    PrecomputedEncoder,
    SentenceEncoder,
    check_text,
)


def test_check_text_rejects_empty_and_overlong():
    assert check_text("on the card: mug") == "on the card: mug"
    with pytest.raises(DataError, match="segment text is empty"):
        check_text("   ")
    with pytest.raises(DataError, match="segment text has 2001 characters; at most 2000"):
        check_text("x" * 2001)
    with pytest.raises(DataError, match="must be a string, got int"):
        check_text(5)


def test_cache_round_trip_keeps_keys_and_vectors_aligned(tmp_path):
    cache = EmbeddingCache(3, tmp_path)
    keys = [b"\x01" * 15 + b"\x00", b"\x02" * 16, b"\x01" * 15 + b"\x00"]  # a trailing NUL byte; [2] == [0]
    cache.put(keys[0], np.array([1, 0, 0]))
    cache.put(keys[1], np.array([0, 1, 0]))
    cache.put(keys[2], np.array([9, 9, 9]))  # same key as keys[0]: ignored
    cache.save()
    back = EmbeddingCache(3, tmp_path)
    assert len(back) == 2
    assert back.get(keys[0]).tolist() == [1, 0, 0] and back.get(keys[1]).tolist() == [0, 1, 0]
    back.put(b"\x03" * 16, np.array([0, 0, 1]))
    back.save()
    again = EmbeddingCache(3, tmp_path)
    assert again.get(b"\x03" * 16).tolist() == [0, 0, 1] and again.get(keys[1]).tolist() == [0, 1, 0]
    with pytest.raises(DataError, match="inconsistent"):
        EmbeddingCache(4, tmp_path)


def test_hashing_and_precomputed_encoders():
    enc = HashingEncoder(64)
    v = enc.encode(["on the card: red lipstick", "on the card: red lipstick", "power bank"])
    assert v.shape == (3, 64) and np.allclose(np.linalg.norm(v, axis=1), 1.0)
    assert np.array_equal(v[0], v[1])
    pre = PrecomputedEncoder({"room-1": np.array([3.0, 4.0]), "room-2": np.array([0.0, 2.0])})
    assert np.allclose(pre.encode(["room-1"]), [[0.6, 0.8]], atol=1e-7)
    with pytest.raises(DataError, match="no precomputed vector for key 'room-3'"):
        pre.encode(["room-3"])


@pytest.mark.slow
def test_packaged_minilm_encodes_offline_with_meaning(tmp_path):
    enc = SentenceEncoder(cache_dir=tmp_path)
    texts = ["on the card: Luma matte lipstick | the lipstick is on the card now",
             "on the card: Luma matte lipstick | only 12 left of the lipstick",
             "on the card: Kiro pro power bank | the power bank ships in 2 days"]
    v = enc.encode(texts)
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1
    enc.save_cache()
    again = SentenceEncoder(cache_dir=tmp_path)
    assert len(again.cache) == 3
    assert np.allclose(again.encode(texts[:1]), v[:1])
