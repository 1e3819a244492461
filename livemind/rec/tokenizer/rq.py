"""Residual k-means quantisation (OneLive §1, as in OneRec/GRID's RQ-KMeans).

Level l clusters the residual left by levels < l:
    q_l = argmin_k ||c_l^k - r_l||,   r_{l+1} = r_l - c_l^{q_l},   r_1 = x.
Each level's codebook is trained with faiss k-means. With `balanced=True` each level then runs a
few rounds of capacity-constrained assignment (no code may take more than (1 + slack) * N / K
training vectors) followed by a centroid update, the usual cure for codebook collapse: every
code ends up owning a similar share of the data, so utilisation stays high. Encoding at serving
time is plain nearest-centroid per level.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np
from safetensors.numpy import load_file, save_file

from livemind.errors import DataError

FORMAT = "livemind-rq/1"


@dataclass(frozen=True)
class RQConfig:
    levels: int = 3  # semantic-ID length, as in OneLive, TIGER and GRID
    codebook_size: int = 256  # codes per level (GRID/OneRec use 256)
    n_iter: int = 25  # k-means iterations per level
    balanced: bool = True  # capacity-constrained assignment against collapse
    balance_rounds: int = 4  # assignment + update rounds after k-means
    balance_slack: float = 0.1  # a code may take up to (1 + slack) * N / K vectors
    candidates: int = 16  # nearest codes considered per vector when balancing
    seed: int = 0

    def __post_init__(self) -> None:
        if self.levels < 1:
            raise ValueError(f"levels must be at least 1, got {self.levels}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {self.codebook_size}")
        if self.balance_slack < 0:
            raise ValueError(f"balance_slack must be non-negative, got {self.balance_slack}")


def _nearest(x: np.ndarray, centroids: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(squared distances, indices) of the k nearest centroids, each (N, k)."""
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return index.search(np.ascontiguousarray(x, dtype=np.float32), k)


def balanced_assign(x: np.ndarray, centroids: np.ndarray, capacity: int, candidates: int = 16) -> np.ndarray:
    """Assign each row of x to a centroid, at most `capacity` rows per centroid.

    Greedy by rank: every vector first bids for its nearest code; each code keeps its closest
    bidders up to its remaining capacity; the rest bid for their next-nearest code, and so on.
    Vectors left over after `candidates` rounds take the nearest code that still has room.
    """
    n, k = len(x), len(centroids)
    if capacity * k < n:
        raise DataError(f"capacity {capacity} x {k} codes cannot hold {n} vectors")
    m = min(candidates, k)
    dist, cand = _nearest(x, centroids, m)  # (N, m)
    assign = np.full(n, -1, dtype=np.int64)
    room = np.full(k, capacity, dtype=np.int64)
    for r in range(m):
        todo = np.flatnonzero(assign < 0)
        if not len(todo):
            break
        codes, d = cand[todo, r], dist[todo, r]
        order = np.lexsort((d, codes))  # by code, closest first
        codes_sorted = codes[order]
        starts = np.r_[0, np.flatnonzero(np.diff(codes_sorted)) + 1]
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        take = rank < room[codes_sorted]
        chosen = todo[order[take]]
        assign[chosen] = codes_sorted[take]
        np.subtract.at(room, codes_sorted[take], 1)
    left = np.flatnonzero(assign < 0)
    if len(left):
        _, ranked = _nearest(x[left], centroids, k)  # every code, nearest first
        for i, row in zip(left, ranked):
            c = row[np.argmax(room[row] > 0)]
            assign[i] = c
            room[c] -= 1
    return assign


class ResidualQuantizer:
    """L codebooks of K centroids over D-dimensional vectors: `centroids` is (L, K, D) float32."""

    def __init__(self, config: RQConfig, centroids: np.ndarray | None = None) -> None:
        self.config = config
        self.centroids = centroids
        if centroids is not None and centroids.shape[:2] != (config.levels, config.codebook_size):
            raise DataError(f"centroids of shape {centroids.shape} do not fit {config.levels} levels x "
                            f"{config.codebook_size} codes")

    @property
    def dim(self) -> int:
        self._check_fitted()
        return int(self.centroids.shape[2])

    def _check_fitted(self) -> None:
        if self.centroids is None:
            raise DataError("the quantizer has no codebooks yet: fit it or load a codebook file")

    def fit(self, x: np.ndarray, progress: Callable[[int, int], None] | None = None) -> ResidualQuantizer:
        c = self.config
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or len(x) < c.codebook_size:
            raise DataError(f"need a (N, D) array with N >= {c.codebook_size} to fit {c.codebook_size} codes, "
                            f"got shape {x.shape}")
        residual = x.copy()
        books = []
        for level in range(c.levels):
            km = faiss.Kmeans(x.shape[1], c.codebook_size, niter=c.n_iter, seed=c.seed + level, verbose=False,
                              max_points_per_centroid=10_000_000)
            km.train(residual)
            cent = km.centroids.copy()
            if c.balanced:
                capacity = math.ceil(len(x) / c.codebook_size * (1 + c.balance_slack))
                for _ in range(c.balance_rounds):
                    assign = balanced_assign(residual, cent, capacity, c.candidates)
                    sums = np.zeros_like(cent)
                    np.add.at(sums, assign, residual)
                    counts = np.bincount(assign, minlength=c.codebook_size)
                    nonempty = counts > 0
                    cent[nonempty] = sums[nonempty] / counts[nonempty, None]
            _, idx = _nearest(residual, cent)
            residual -= cent[idx[:, 0]]
            books.append(cent)
            if progress:
                progress(level + 1, c.levels)
        self.centroids = np.stack(books).astype(np.float32)
        return self

    def encode(self, x: np.ndarray, previous: np.ndarray | None = None, sticky: float = 0.0) -> np.ndarray:
        """Codes (N, L) int64 by nearest centroid per level.

        With `previous` (N, L) codes (-1 = none) and `sticky` > 0, a vector keeps its previous
        code at a level when its prefix is unchanged and that code's centroid is within
        (1 + sticky) x the distance of the nearest one: hysteresis, so noise does not make a
        room's SID flap while a real content change (a large move) still switches it.
        """
        self._check_fitted()
        x = np.atleast_2d(np.asarray(x, dtype=np.float32))
        if x.shape[1] != self.dim:
            raise DataError(f"vectors have dimension {x.shape[1]}, the codebook expects {self.dim}")
        if sticky < 0:
            raise DataError(f"sticky must be non-negative, got {sticky}")
        residual = x.copy()
        n = len(x)
        codes = np.empty((n, self.config.levels), dtype=np.int64)
        same_prefix = np.ones(n, dtype=bool) if previous is not None else np.zeros(n, dtype=bool)
        for level, cent in enumerate(self.centroids):
            # (N, K) squared distances: |r|^2 - 2 r.c + |c|^2
            d = (residual * residual).sum(1, keepdims=True) - 2.0 * residual @ cent.T + (cent * cent).sum(1)[None, :]
            best = np.argmin(d, axis=1)
            if previous is not None and sticky > 0:
                prev = previous[:, level]
                cand = same_prefix & (prev >= 0)
                d_best = np.maximum(d[np.arange(n), best], 0.0)
                d_prev = np.maximum(d[np.arange(n), np.maximum(prev, 0)], 0.0)
                keep = cand & (d_prev <= (1.0 + sticky) ** 2 * d_best)
                best = np.where(keep, prev, best)
            if previous is not None:
                same_prefix &= best == previous[:, level]
            codes[:, level] = best
            residual -= cent[best]
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        self._check_fitted()
        codes = np.atleast_2d(codes)
        return sum(self.centroids[level][codes[:, level]] for level in range(codes.shape[1]))

    def reconstruction_error(self, x: np.ndarray) -> list[float]:
        """Relative squared error ||x - x_hat_l||^2 / ||x||^2 after each level l (should fall)."""
        codes = self.encode(x)
        total = float((x * x).sum())
        out, approx = [], np.zeros_like(x, dtype=np.float32)
        for level in range(self.config.levels):
            approx = approx + self.centroids[level][codes[:, level]]
            out.append(float(((x - approx) ** 2).sum()) / max(total, 1e-12))
        return out

    # ---------------------------------------------------------------------------- persistence

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        self._check_fitted()
        meta = {"format": FORMAT, "config": asdict(self.config), "dim": self.dim, **(extra or {})}
        save_file({"centroids": self.centroids}, str(path), metadata={"livemind": json.dumps(meta)})

    @staticmethod
    def read_meta(path: str | Path) -> dict:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise DataError(f"codebook file {str(path)!r} does not exist")
        try:
            with safe_open(str(path), "np") as f:
                raw = (f.metadata() or {}).get("livemind")
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise DataError(f"{path}: not a safetensors codebook file ({exc})") from exc
        if raw is None:
            raise DataError(f"{path}: no livemind metadata; not a livemind codebook")
        meta = json.loads(raw)
        if meta.get("format") != FORMAT:
            raise DataError(f"{path}: codebook format {meta.get('format')!r}, expected {FORMAT!r}")
        return meta

    @classmethod
    def load(cls, path: str | Path) -> tuple[ResidualQuantizer, dict]:
        meta = cls.read_meta(path)
        centroids = load_file(str(path))["centroids"]
        config = RQConfig(**meta["config"])
        if centroids.shape != (config.levels, config.codebook_size, meta["dim"]):
            raise DataError(f"{path}: centroids of shape {centroids.shape} disagree with the metadata "
                            f"({config.levels}, {config.codebook_size}, {meta['dim']})")
        return cls(config, centroids), meta
