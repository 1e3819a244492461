"""The live recommendation engine: durable ingest into the live state, and OneLive's decoding over
the rooms live now. A plain class (no HTTP): the service wraps it with batching, timeouts and
metrics; the replay benchmark and the tests can drive it directly.

- `ingest(records)`: check the whole batch against the live state, append it to the durable log in
  one transaction, then apply it (segments re-encoded by the dynamic tokenizer in one embedding
  call). The reply comes after both: an acknowledged event is durable and already live.
- `recommend_many(requests)`: each request's history, live snapshot and room signals from the live
  state, decoded by `livemind.rec.model.beam.recommend_batch`: `recommend` (the function the
  offline evaluation calls; every live room scored when few are live, else the constrained beam
  search) with every model call batched over the requests.
- `open`: rebuild the state by re-applying the durable log (after a crash or a restart), so the
  restarted engine answers exactly as one that never stopped.
- `reload`: load another generator beside the serving one and swap the reference atomically.

With `broker` set (`livemind serve --broker redis://...`) the engine is a replica: `ingest`
checks a batch and appends it to the broker's `events` stream (acknowledged once Redis has it), the
tokenizer, state and archive workers do the rest, and the live state follows the broker's `applied`
log (`serve.follower`): the same `LiveState`, the same records in the same order, with the SIDs the
tokenizer workers computed. An acknowledged event is live once `applied_offset` reaches it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from livemind.errors import ConfigError, DataError, LivemindError
from livemind.rec.alignment.align import fingerprint
from livemind.rec.live.state import LiveState
from livemind.rec.model.beam import recommend_batch
from livemind.rec.model.checkpoint import load_generator
from livemind.rec.model.generator import OneLiveGenerator
from livemind.rec.tokenizer.dynamic import DynamicTokenizer
from livemind.world.live_log import LiveLog, LiveRecord


class ApplyFailed(LivemindError):
    """A committed batch could not be applied to the live state: the engine stops serving (503)."""


@dataclass(frozen=True)
class EngineConfig:
    tokenizer: Path | None  # a tokenizer folder (livemind rec tokenizer fit); None with generator None: host only
    generator: Path | None  # a generator checkpoint folder (livemind rec train / align)
    store: Path = Path("runs/serve/events.duckdb")  # the durable live event log (":memory:" for none)
    cache: Path | None = Path("runs/cache/embeddings")  # segment-embedding cache (restarts re-embed from it)
    beam: int = 32  # beam width of the constrained search (the offline evaluation's)
    max_events: int = 10_000  # events per ingest batch; more is refused (HTTP 413)
    device: str = "cpu"
    broker: str | None = None  # redis://HOST:PORT/DB: ingest appends to Redis Streams, the state follows it
    snapshot_every: int = 100_000  # a replica snapshots its state every this many events (one at a time; 0: never)

    def __post_init__(self) -> None:
        if (self.tokenizer is None) != (self.generator is None):
            raise ConfigError("a tokenizer and a generator together, or neither (a host-only service)")
        if self.broker is not None and self.tokenizer is None:
            raise ConfigError("--broker serves the recommender: it needs a tokenizer and a generator")
        if self.beam < 1 or self.max_events < 1 or self.snapshot_every < 0:
            raise ConfigError(f"beam and max_events >= 1 and snapshot_every >= 0 expected, got {self.beam}, "
                              f"{self.max_events}, {self.snapshot_every}")


@dataclass(frozen=True)
class RecRequest:
    viewer: int
    time: float | None = None  # None: the latest time the state has seen
    k: int = 10


@dataclass
class ServedModel:
    model: OneLiveGenerator
    path: str
    fingerprint: str


class RecEngine:
    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        self.broker, self.follower, self.log = None, None, None
        if cfg.broker is not None:  # a replica: SIDs come from the tokenizer workers through the broker
            from livemind.serve.scale.broker import Broker
            from livemind.serve.scale.follower import SidFeed

            meta = DynamicTokenizer.read_meta(cfg.tokenizer)
            self.tokenizer = SidFeed(int(meta["rq"]["levels"]), meta["version"])
            self.broker = Broker(cfg.broker)
        else:
            self.tokenizer = DynamicTokenizer.load(cfg.tokenizer, cache_dir=cfg.cache) if cfg.tokenizer else None
            self.log = LiveLog(cfg.store)
        self.served = self._load(cfg.generator) if cfg.generator else None  # None: host only
        self.state = LiveState(self.tokenizer, self.served.model.cfg.signals if self.served else None)
        self._ingest_lock = threading.Lock()
        self.apply_error: str | None = None  # a committed batch that could not be applied: not serving

    def _load(self, path: str | Path) -> ServedModel:
        model = load_generator(path, self.tokenizer.version, device=self.cfg.device)
        return ServedModel(model, str(path), fingerprint(model))

    # ------------------------------------------------------------------------------ writes

    def open(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Rebuild the live state from the durable log; returns the number of events re-applied."""
        if self.broker is not None:
            return self._follow()
        done, total = 0, self.log.offset
        with self._ingest_lock:
            for records in self.log.read(batch=5_000):
                self.state.apply(records)
                done += len(records)
                if progress:
                    progress(done, total)
        return done

    def _follow(self) -> int:
        from livemind.serve.scale.broker import check_version
        from livemind.serve.scale.follower import Follower

        self.broker.ping()
        check_version(self.broker, self.tokenizer.version)
        for group in ("state", "archive"):  # before the first event, so that no trim passes them by
            self.broker.ensure_group(self.broker.events, group)
        self.follower = Follower(self.broker, self.state, self.tokenizer, self.cfg.snapshot_every)
        n = self.follower.catch_up()
        self.follower.start()
        return n

    @property
    def applied_offset(self) -> int:
        """The id of the last event the live state has applied (single process: the last acknowledged)."""
        return self.follower.applied if self.follower is not None else self.log.offset

    @property
    def acknowledged_offset(self) -> int:
        """The id of the last event acknowledged to any client (on a replica: appended to the broker);
        an offset past it was never given out, so no wait can see it applied."""
        return self.broker.last_event() if self.broker is not None else self.log.offset

    def wait_applied(self, offset: int, timeout: float) -> bool:
        """Block until the live state has applied events up to `offset` (False: not within `timeout` s)."""
        if self.follower is None:
            return self.log.offset >= offset  # acknowledged here means applied
        return self.follower.wait(offset, timeout)

    def ingest(self, records: Sequence[LiveRecord], batch_id: str | None = None) -> tuple[int, int]:
        """(events accepted, offset of the last); a bad batch raises a BatchError and stores nothing.

        `batch_id`: a batch sent again with the id of one already stored (a client's retry, after a
        lost reply or a `kill -9` between commit and reply) is acknowledged with the first one's
        offset and neither stored nor applied again. A batch that was committed but could not be
        applied stops the service from serving (`apply_error`, shown by /readyz) rather than serve
        a half-applied state; a restart rebuilds the state from the log."""
        if len(records) > self.cfg.max_events:
            raise DataError(f"a batch of {len(records)} events; at most {self.cfg.max_events} per request")
        if self.broker is not None:  # checked against the broker's room facts and appended there
            return len(records), self.broker.append(records, batch_id=batch_id)
        with self._ingest_lock:  # batches are checked, stored and applied one at a time, in order
            if self.apply_error is not None:
                raise ApplyFailed(self.apply_error)
            if batch_id is not None and (offset := self.log.batch(batch_id)) is not None:
                return len(records), offset
            self.state.check(records)  # everything that can refuse the batch, before the commit
            offset = self.log.append(records, batch_id=batch_id)
            try:
                self.state.apply(records)
            except Exception as exc:
                self.apply_error = f"events up to offset {offset} are stored but could not be applied " \
                                   f"({type(exc).__name__}: {exc}); a restart rebuilds the state from the log"
                raise ApplyFailed(self.apply_error) from exc
        return len(records), offset

    # ------------------------------------------------------------------------------ reads

    def recommend_many(self, requests: Sequence[RecRequest]) -> list[dict]:
        """One answer per request: {"time", "rooms": [{room, streamer, sid, product, score}], ...}."""
        served = self.served  # one model for the whole batch, even if a reload swaps it meanwhile
        if served is None:
            raise DataError("this service runs the host only (--host-only): no recommender is loaded")
        model = served.model
        H, now = model.cfg.max_history, self.state.now()
        times = [r.time if r.time is not None else now for r in requests]
        ask = [i for i, t in enumerate(times) if t > float("-inf")]  # nothing seen yet: nothing is live
        hists = {i: self.state.history(requests[i].viewer, times[i], H) for i in ask}
        snaps = {i: self.state.snapshot(times[i]) for i in ask}
        signals = [self.state.signals_for(requests[i].viewer, times[i], snaps[i].rooms)
                   if model.cfg.room_signals and len(snaps[i].rooms) else None for i in ask]
        k = max((r.k for r in requests), default=10)
        recs = dict(zip(ask, recommend_batch(model, [hists[i] for i in ask], [snaps[i] for i in ask], k,
                                             max(self.cfg.beam, k), signals)))
        out = []
        for i, (req, t) in enumerate(zip(requests, times)):
            rooms = []
            for room, score in recs.get(i, [])[:req.k]:
                info = self.state.room_info(room, t)
                rooms.append({"room": room, "streamer": info["streamer"], "sid": info["sid"],
                              "product": info["product"], "score": score})
            out.append({"viewer": req.viewer, "time": None if t == float("-inf") else t, "rooms": rooms,
                        "generator": served.fingerprint, "cold_start": i not in hists or hists[i].codes.shape[1] == 0})
        return out

    def live_rooms(self) -> dict:
        """Rooms live now with what they show and their audience (watches in the signal window)."""
        t = self.state.now()
        live = [int(r) for r in (self.state.snapshot().rooms if self.tokenizer is not None else self.state.live_now())]
        rooms = []
        for room, audience in zip(live, self.state.audience(live, t) if live else []):
            info = self.state.room_info(room)
            rooms.append({"room": room, "streamer": info["streamer"], "sid": info["sid"], "product": info["product"],
                          "since": info["since"], "segment": info["segment"], "audience": audience})
        return {"time": None if t == float("-inf") else t, "rooms": rooms}

    def popular(self, req: RecRequest) -> dict:
        """The popularity baseline (`rec.baselines.popularity`): rooms live at the request's time by
        their audience in the signal window (ties: room id); the score is that audience."""
        t = req.time if req.time is not None else self.state.now()
        if t == float("-inf"):
            return {"viewer": req.viewer, "time": None, "rooms": [], "generator": "popularity", "cold_start": True}
        live = ([int(r) for r in self.state.snapshot(t).rooms] if self.tokenizer is not None else
                [r for r in self.state.live_now() if self.state.room_info(r, t)["segment"] is not None])
        audience = self.state.audience(live, t) if live else []
        ranked = sorted(zip(live, audience), key=lambda x: (-x[1], x[0]))[:req.k]
        rooms = []
        for room, n in ranked:
            info = self.state.room_info(room, t)
            rooms.append({"room": room, "streamer": info["streamer"], "sid": info["sid"], "product": info["product"],
                          "score": float(n)})
        return {"viewer": req.viewer, "time": t, "rooms": rooms, "generator": "popularity", "cold_start": False}

    # ------------------------------------------------------------------------------ models

    def reload(self, path: str | Path | None = None) -> ServedModel:
        """Load a generator (default: the configured one again) and swap it in atomically; the old one
        serves until the new one is ready, and a failed load leaves it serving."""
        if self.served is None:
            raise DataError("this service runs the host only (--host-only): there is no generator to reload")
        started = time.perf_counter()
        new = self._load(path or self.cfg.generator)
        if new.model.cfg.signals != self.state.signals or new.model.cfg.levels != self.tokenizer.levels:
            raise DataError(f"{path}: a generator with other room-signal settings or SID length than the live state "
                            f"({new.model.cfg.signals}, {new.model.cfg.levels} levels); restart the service for it")
        self.served = new
        self.last_reload_s = time.perf_counter() - started
        return new

    def close(self) -> None:
        if self.follower is not None:
            self.follower.close()
        if self.broker is not None:
            self.broker.close()
        if self.log is not None:
            self.log.close()
