"""The dynamic tokenizer (OneLive §1): every new 30-second segment gives its room a new semantic ID.

    segment text --encoder--> x30;  xpool = mean of the room's x30 so far
    (x30, xpool, streamer) --RoomTower--> x_ia --residual k-means--> SID (L codes)

Codebooks and the room tower are trained offline (`fit_tokenizer`, `livemind rec tokenizer fit`)
and versioned by a hash of their weights; assignments update online: `start_room`, `update`
(one segment) / `update_many` (a batch, one embedding call), `end_room`. Each call validates
everything before it changes anything, so a rejected segment leaves the room state and the
`LiveIndex` as they were.

A tokenizer directory holds `tokenizer.json` (format, versions, configs), `room_tower.safetensors`
and `codebook.safetensors`. Anything trained on SIDs (the generator, reward models) records the
tokenizer version and refuses another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from livemind.config import from_dict
from livemind.errors import DataError
from livemind.rec.live.index import SID, LiveIndex
from livemind.rec.tokenizer.content import DEFAULT_MODEL, ContentEncoder, HashingEncoder, SentenceEncoder, check_text
from livemind.rec.tokenizer.fusion import FusionConfig, RoomTower
from livemind.rec.tokenizer.rq import ResidualQuantizer
from livemind.world.schema import Segment

FORMAT = "livemind-tokenizer/1"


@dataclass(frozen=True)
class EncoderConfig:
    kind: Literal["sentence", "hashing"] = "sentence"  # hashing: fast non-semantic stand-in for tests
    model: str = DEFAULT_MODEL  # local folder or hub name of a sentence-transformers model
    quantize_int8: bool = True  # ~1.4x faster MiniLM on CPU (0.945 cosine to fp32); fit and serve alike
    max_seq_length: int = 64
    dim: int = 256  # hashing encoder only

    def __post_init__(self) -> None:
        if self.kind not in ("sentence", "hashing"):
            raise ValueError(f"encoder kind must be 'sentence' or 'hashing', got {self.kind!r}")


def make_encoder(cfg: EncoderConfig, cache_dir: str | Path | None = None) -> ContentEncoder:
    if cfg.kind == "hashing":
        return HashingEncoder(cfg.dim)
    return SentenceEncoder(cfg.model, cache_dir=cache_dir, max_seq_length=cfg.max_seq_length,
                           quantize_int8=cfg.quantize_int8)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()[:12]


def tower_version(tower: RoomTower, encoder_name: str) -> str:
    state = tower.state_dict()
    parts = [encoder_name.encode(), json.dumps(asdict(tower.cfg), sort_keys=True).encode()]
    parts += [k.encode() + state[k].detach().cpu().numpy().tobytes() for k in sorted(state)]
    return "tower-" + _digest(*parts)


@dataclass
class SavedRoom:
    """What the tokenizer knows of a live room, outside it (`save_room` / `restore_room`)."""

    streamer: int
    pool_sum: np.ndarray  # (Dc,) float64 sum of the room's x30 so far
    n: int  # segments seen
    last_index: int  # -1: none yet
    sid: SID | None  # its SID now (the hysteresis of the next encoding reads it)


@dataclass
class _RoomState:
    streamer: int
    pool_sum: np.ndarray  # (Dc,) sum of the room's x30 so far
    n: int = 0  # segments seen
    last_index: int = -1
    vector: np.ndarray | None = None  # latest x_ia, kept to re-encode on a codebook swap
    topic: str = ""  # latest segment's topic, kept for the same reason


@dataclass(frozen=True)
class SidLayout:
    """How a segment's SID is laid out around the residual codes of its content vector x_ia:

        [topic] + (content codes, one per residual level) + [identity digits]

    - `topic`: a first level that is the segment's topic (its product category, or chat), the
      platform's own label, so the first code a generator predicts is the viewer's category taste
      (residual k-means keeps it only partly: a linear probe reads the category from 63% of
      level-1 codes). Topics are numbered by a vocabulary fixed at fit time; any other topic gets
      the code after the last.
    - `identity_digits`: the streamer id in that many base-K digits (K: the codebook size), most
      significant first, as TIGER's de-duplication digit does: the last levels say *who* is live,
      so a generator can learn a streamer's draw and the viewer's returns to it.
    """

    topic: bool = False
    identity_digits: int = 0

    def __post_init__(self) -> None:
        if self.identity_digits < 0:
            raise ValueError(f"identity_digits must be non-negative, got {self.identity_digits}")

    @property
    def extra_levels(self) -> int:
        return int(self.topic) + self.identity_digits


class DynamicTokenizer:
    def __init__(self, encoder: ContentEncoder, tower: RoomTower, quantizer: ResidualQuantizer,
                 encoder_config: EncoderConfig | None = None, sticky: float = 0.0,
                 layout: SidLayout | None = None, topics: Sequence[str] = ()) -> None:
        if encoder.dim != tower.cfg.content_dim:
            raise DataError(f"encoder {encoder.name!r} gives {encoder.dim}-d vectors, the room tower expects "
                            f"{tower.cfg.content_dim}-d")
        if quantizer.dim != tower.cfg.out_dim:
            raise DataError(f"codebook dimension {quantizer.dim} does not match the room tower's output {tower.cfg.out_dim}")
        if sticky < 0:
            raise DataError(f"sticky must be non-negative, got {sticky}")
        self.encoder = encoder
        self.encoder_config = encoder_config
        self.sticky = sticky  # SID hysteresis, see ResidualQuantizer.encode
        self.tower = tower.eval()
        self.quantizer = quantizer
        self.layout = SidLayout() if layout is None else layout
        self.topics = tuple(sorted(set(topics))) if self.layout.topic else ()
        if self.layout.topic and len(self.topics) + 1 > quantizer.config.codebook_size:
            raise DataError(f"{len(self.topics)} topics and one for any other do not fit in "
                            f"{quantizer.config.codebook_size} codes")
        self.tower_version = tower_version(tower, encoder.name)
        self.version = self._version()
        self.index = LiveIndex(self.levels, self.version)
        self._rooms: dict[int, _RoomState] = {}
        self._ended: set[int] = set()

    def _version(self) -> str:
        parts = [self.tower_version.encode(), self.quantizer.centroids.tobytes()]
        if self.layout.extra_levels:  # plain layouts keep the versions they always had
            parts.append(json.dumps([asdict(self.layout), self.topics]).encode())
        return "tok-" + _digest(*parts)

    @property
    def levels(self) -> int:
        """Codes per SID: the residual levels and the layout's topic and identity levels."""
        return self.quantizer.config.levels + self.layout.extra_levels

    @property
    def content_levels(self) -> slice:
        """Where the residual content codes sit in a SID."""
        start = int(self.layout.topic)
        return slice(start, start + self.quantizer.config.levels)

    @property
    def code_vectors(self) -> np.ndarray:
        """(levels, K, D) float32: each code's vector, the codebook centroids at the content levels
        and zeros at the topic and identity levels (which say nothing about the content vector)."""
        c = self.quantizer.centroids
        out = np.zeros((self.levels, *c.shape[1:]), dtype=np.float32)
        out[self.content_levels] = c
        return out

    def lay_out(self, codes: np.ndarray, topics: Sequence[str] | np.ndarray | None,
                streamers: np.ndarray) -> np.ndarray:
        """SIDs (N, levels) from the residual codes (N, Lq) of N segments, their topics and streamers."""
        codes = np.asarray(codes, dtype=np.int64).reshape(len(streamers), self.quantizer.config.levels)
        parts = []
        if self.layout.topic:
            if topics is None:
                raise DataError("this tokenizer's SIDs start with the segment's topic: give each segment's topic")
            number = {t: i for i, t in enumerate(self.topics)}
            parts.append(np.array([number.get(str(t), len(self.topics)) for t in topics], dtype=np.int64)[:, None])
        parts.append(codes)
        K = self.codebook_size
        streamers = np.asarray(streamers, dtype=np.int64)
        parts += [(streamers // K ** i % K)[:, None] for i in reversed(range(self.layout.identity_digits))]
        return np.concatenate(parts, axis=1)

    @property
    def codebook_size(self) -> int:
        return self.quantizer.config.codebook_size

    # --------------------------------------------------------------------------- room lifecycle

    def start_room(self, room: int, streamer: int) -> None:
        if room in self._rooms:
            raise DataError(f"room {room} is already live")
        if room in self._ended:
            raise DataError(f"room {room} has ended; room ids are not reused")
        self._rooms[room] = _RoomState(int(streamer), np.zeros(self.encoder.dim, dtype=np.float64))

    def end_room(self, room: int) -> None:
        self._state(room)
        if room in self.index:
            self.index.remove(room)
        del self._rooms[room]
        self._ended.add(room)

    def _state(self, room: int) -> _RoomState:
        st = self._rooms.get(room)
        if st is None:
            if room in self._ended:
                raise DataError(f"segment for room {room}, which has ended")
            raise DataError(f"segment for unknown room {room}: start_room it first")
        return st

    def reset(self) -> None:
        """Forget every room (live or ended) and empty the live index; trained weights stay."""
        self._rooms.clear()
        self._ended.clear()
        self.index.replace_all({}, self.version)

    def save_room(self, room: int) -> SavedRoom | None:
        """A live room's state, to keep outside this process (None: the room is not live here)."""
        st = self._rooms.get(room)
        if st is None:
            return None
        return SavedRoom(st.streamer, st.pool_sum.copy(), st.n, st.last_index, self.index.sid_of(room))

    def restore_room(self, room: int, saved: SavedRoom) -> None:
        """Make a room live again as `save_room` left it (a tokenizer worker keeps its rooms in Redis)."""
        self._ended.discard(room)
        self._rooms[room] = _RoomState(saved.streamer, saved.pool_sum.astype(np.float64), saved.n, saved.last_index)
        if saved.sid is not None:
            self.index.upsert(room, tuple(saved.sid))

    def room_vector(self, room: int) -> np.ndarray | None:
        """The room's latest quantised-space vector x_ia (None before its first segment)."""
        return self._state(room).vector

    def live_rooms(self) -> list[int]:
        return sorted(self._rooms)

    # ---------------------------------------------------------------------------------- updates

    def update(self, segment: Segment) -> SID:
        """Tokenise one new segment; returns the room's new SID."""
        return self.update_many([segment])[0]

    def update_many(self, segments: Sequence[Segment]) -> list[SID]:
        """Tokenise a batch of segments (one embedding call), in order."""
        last: dict[int, int] = {}
        for seg in segments:
            check_text(seg.text)
            st = self._state(seg.room)
            prev = last.get(seg.room, st.last_index)
            if seg.index <= prev:
                raise DataError(f"segment {seg.index} of room {seg.room} arrives after segment {prev}; "
                                "segments must come in order")
            last[seg.room] = seg.index
        x30 = self.encoder.encode([s.text for s in segments])  # (N, Dc)
        return self.update_vectors([s.room for s in segments], [s.index for s in segments], x30,
                                   [s.topic for s in segments])

    def update_vectors(self, rooms: Sequence[int], indices: Sequence[int], x30: np.ndarray,
                       topics: Sequence[str] | None = None) -> list[SID]:
        """Tokenise segments whose content vectors are already computed (the embedding-free path);
        `topics`: each segment's topic, needed when the layout starts with it."""
        x30 = np.atleast_2d(np.asarray(x30, dtype=np.float32))
        if x30.shape != (len(rooms), self.encoder.dim):
            raise DataError(f"content vectors of shape {x30.shape}, expected ({len(rooms)}, {self.encoder.dim})")
        states = [self._state(r) for r in rooms]
        # pooled history including the new segment; the same room may appear several times
        pool_sum = {r: st.pool_sum.copy() for r, st in zip(rooms, states)}
        count = {r: st.n for r, st in zip(rooms, states)}
        pools = np.empty_like(x30)
        for i, r in enumerate(rooms):
            pool_sum[r] += x30[i]
            count[r] += 1
            pools[i] = pool_sum[r] / count[r]
        streamers = torch.tensor([st.streamer for st in states], dtype=torch.long, device="cpu")  # the tower's
        with torch.inference_mode():
            vec = self.tower(torch.from_numpy(x30), torch.from_numpy(pools), streamers).numpy()  # (N, out)
        if self.layout.topic and topics is None:
            raise DataError("this tokenizer's SIDs start with the segment's topic: give each segment's topic")
        previous = np.array([self.index.sid_of(r) or (-1,) * self.levels for r in rooms], dtype=np.int64)
        previous = previous.reshape(len(rooms), self.levels)[:, self.content_levels]
        if len(set(rooms)) < len(rooms):  # a room twice in one batch: its later segment follows its earlier one
            codes = self._sequential(rooms, vec, previous)
        else:
            codes = self.quantizer.encode(vec, previous, self.sticky)  # (N, Lq)
        codes = self.lay_out(codes, topics, np.array([st.streamer for st in states], dtype=np.int64))
        sids: list[SID] = []
        for i, (r, st) in enumerate(zip(rooms, states)):
            st.pool_sum += x30[i]
            st.n += 1
            st.last_index = int(indices[i])
            st.vector = vec[i]
            st.topic = topics[i] if topics is not None else ""
            sid = tuple(int(c) for c in codes[i])
            self.index.upsert(r, sid)
            sids.append(sid)
        return sids

    def _sequential(self, rooms: Sequence[int], vec: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """Codes when a room has several segments in one batch: each segment's `previous` is its room's
        code before it, so the batch goes in rounds (every room's first segment, then every room's
        second, ...), each round one vectorised `encode`; the same codes as one segment at a time."""
        codes = np.empty_like(previous)
        rank = np.zeros(len(rooms), dtype=np.int64)
        seen: dict[int, int] = {}
        for i, r in enumerate(rooms):
            rank[i] = seen.get(r, 0)
            seen[r] = rank[i] + 1
        last: dict[int, np.ndarray] = {}
        for k in range(int(rank.max()) + 1):
            idx = np.flatnonzero(rank == k)
            prev = np.stack([last.get(rooms[i], previous[i]) for i in idx])
            codes[idx] = self.quantizer.encode(vec[idx], prev, self.sticky)
            for i in idx:
                last[rooms[i]] = codes[i]
        return codes

    def encode_vectors(self, x30: np.ndarray, xpool: np.ndarray, streamers: np.ndarray,
                       topics: Sequence[str] | np.ndarray | None = None,
                       batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Offline: (x_ia (N, out), SIDs (N, levels)) for many segments at once; no state change.
        `topics`: each segment's topic, needed when the layout starts with it."""
        out = []
        with torch.inference_mode():
            for i in range(0, len(x30), batch_size):
                out.append(self.tower(torch.as_tensor(x30[i:i + batch_size], dtype=torch.float32, device="cpu"),
                                      torch.as_tensor(xpool[i:i + batch_size], dtype=torch.float32, device="cpu"),
                                      torch.as_tensor(streamers[i:i + batch_size], dtype=torch.long, device="cpu")).numpy())
        vec = np.concatenate(out) if out else np.zeros((0, self.tower.cfg.out_dim), dtype=np.float32)
        if not len(vec):
            return vec, np.zeros((0, self.levels), dtype=np.int64)
        return vec, self.lay_out(self.quantizer.encode(vec), topics, np.asarray(streamers))

    # ----------------------------------------------------------------------------- persistence

    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.tower.state_dict().items()}, str(out / "room_tower.safetensors"))
        self.quantizer.save(out / "codebook.safetensors", {"tower_version": self.tower_version, "version": self.version})
        meta = {
            "format": FORMAT, "version": self.version, "tower_version": self.tower_version,
            "encoder_name": self.encoder.name,
            "encoder": asdict(self.encoder_config) if self.encoder_config else None,
            "fusion": asdict(self.tower.cfg), "rq": asdict(self.quantizer.config),
            "sid": asdict(self.layout), "topics": list(self.topics), **(extra or {}),
        }
        (out / "tokenizer.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        return out

    @staticmethod
    def read_meta(directory: str | Path) -> dict:
        path = Path(directory) / "tokenizer.json"
        if not path.is_file():
            raise DataError(f"{directory}: no tokenizer.json; not a tokenizer directory (fit one with "
                            "`livemind rec tokenizer fit`)")
        meta = json.loads(path.read_text())
        if meta.get("format") != FORMAT:
            raise DataError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        return meta

    @classmethod
    def load(cls, directory: str | Path, encoder: ContentEncoder | None = None,
             cache_dir: str | Path | None = None) -> DynamicTokenizer:
        directory = Path(directory)
        meta = cls.read_meta(directory)
        enc_cfg = from_dict(EncoderConfig, meta["encoder"]) if meta.get("encoder") else None
        if encoder is None:
            if enc_cfg is None:
                raise DataError(f"{directory}: the tokenizer was fit with a custom encoder; pass it to load()")
            encoder = make_encoder(enc_cfg, cache_dir)
        tower = RoomTower(FusionConfig(**meta["fusion"]))
        tower.load_state_dict(load_file(str(directory / "room_tower.safetensors")))
        if tower_version(tower, encoder.name) != meta["tower_version"]:
            raise DataError(f"{directory}: room tower weights (or encoder {encoder.name!r}) do not match "
                            f"tower version {meta['tower_version']}")
        codebook = directory / "codebook.safetensors"
        cls._check_codebook_meta(ResidualQuantizer.read_meta(codebook), codebook, meta["tower_version"],
                                 tower.cfg.out_dim)
        quantizer, _ = ResidualQuantizer.load(codebook)
        layout = SidLayout(**meta["sid"]) if meta.get("sid") else None
        tok = cls(encoder, tower, quantizer, enc_cfg, layout=layout, topics=meta.get("topics", ()))
        if tok.version != meta["version"]:
            raise DataError(f"{directory}: files give version {tok.version}, tokenizer.json says {meta['version']}")
        return tok

    @staticmethod
    def _check_codebook_meta(meta: dict, path: Path, tower_version_: str, out_dim: int) -> None:
        if meta["dim"] != out_dim:
            raise DataError(f"{path}: codebook dimension {meta['dim']} does not match the room tower's output {out_dim}")
        if meta.get("tower_version") != tower_version_:
            raise DataError(f"{path}: codebook was trained for room tower {meta.get('tower_version')}, "
                            f"this tokenizer's is {tower_version_}")

    def load_codebook(self, path: str | Path) -> str:
        """Swap in retrained codebooks for the same room tower; live rooms are re-tokenised.

        A file for another room tower or of another dimension is refused and nothing changes.
        Returns the new tokenizer version.
        """
        path = Path(path)
        self._check_codebook_meta(ResidualQuantizer.read_meta(path), path, self.tower_version, self.tower.cfg.out_dim)
        quantizer, _ = ResidualQuantizer.load(path)
        if quantizer.config.levels != self.quantizer.config.levels:
            raise DataError(f"{path}: codebook has {quantizer.config.levels} levels, the live index holds "
                            f"SIDs of {self.quantizer.config.levels} residual levels")
        if quantizer.config.codebook_size != self.codebook_size and self.layout.extra_levels:
            raise DataError(f"{path}: codebook of {quantizer.config.codebook_size} codes, this tokenizer's SID "
                            f"layout numbers topics and streamers in base {self.codebook_size}")
        live = {r: st for r, st in self._rooms.items() if st.vector is not None}
        self.quantizer = quantizer
        codes = np.zeros((0, self.levels), dtype=np.int64)
        if live:
            codes = self.lay_out(quantizer.encode(np.stack([st.vector for st in live.values()])),
                                 [st.topic for st in live.values()], np.array([st.streamer for st in live.values()]))
        self.version = self._version()
        self.index.replace_all({r: tuple(int(c) for c in row) for r, row in zip(live, codes)}, self.version)
        return self.version
