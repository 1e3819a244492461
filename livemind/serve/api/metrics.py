"""Prometheus metrics of one service instance (its own registry: no module globals)."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Recent:
    """The last `size` samples with their clock times: exact percentiles over a recent window (the
    console's strip; Prometheus histograms keep the long-run view)."""

    def __init__(self, size: int = 4096) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._samples.append((time.monotonic(), value))

    def summary(self, window_s: float = 60.0) -> dict[str, float | None]:
        """{"n", "p50", "p99"} of the samples of the last `window_s` seconds (None: no samples).

        >>> r = Recent()
        >>> for v in range(1, 101):
        ...     r.add(v / 1000)
        >>> r.summary()
        {'n': 100, 'p50': 0.0505, 'p99': 0.09901}
        """
        cut = time.monotonic() - window_s
        with self._lock:
            vals = [v for t, v in self._samples if t >= cut]
        if not vals:
            return {"n": 0, "p50": None, "p99": None}
        return {"n": len(vals), "p50": round(float(np.percentile(vals, 50)), 6),
                "p99": round(float(np.percentile(vals, 99)), 6)}


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("livemind_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("livemind_request_seconds", "HTTP request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.events = Counter("livemind_events_ingested", "live events stored and applied", registry=r)
        self.reencodes = Counter("livemind_segment_reencodes", "segments re-encoded into SIDs", registry=r)
        self.live_rooms = Gauge("livemind_live_rooms", "rooms live now", registry=r)
        self.batch = Histogram("livemind_recommend_batch_size", "requests per recommendation forward pass",
                               buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.reloads = Counter("livemind_model_reloads", "generator swaps", ["outcome"], registry=r)
        self.host_ttft = Histogram("livemind_host_ttft_seconds", "host: time to the first token", buckets=LATENCY_BUCKETS,
                                   registry=r)
        self.host_answer = Histogram("livemind_host_answer_seconds", "host: time to the first answer token (after "
                                     "the reasoning)", buckets=LATENCY_BUCKETS, registry=r)
        self.host_tpot = Histogram("livemind_host_tpot_seconds", "host: time per output token after the first",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.host_e2e = Histogram("livemind_host_e2e_seconds", "host: whole generation", buckets=LATENCY_BUCKETS,
                                  registry=r)
        self.host_tokens = Counter("livemind_host_output_tokens", "host: tokens generated", registry=r)
        self.host_queue = Gauge("livemind_host_queue_depth", "host: requests waiting for the generator", registry=r)
        self.host_batch = Gauge("livemind_host_batch_size", "host: requests decoding together now", registry=r)
        self.host_drafted = Counter("livemind_host_draft_tokens", "host: prompt-lookup draft tokens checked", registry=r)
        self.host_accepted = Counter("livemind_host_draft_tokens_accepted", "host: draft tokens greedy decoding made too",
                                     registry=r)
        self._counted: dict[Counter, float] = {}  # each catch_up counter's total when /metrics last read it
        self.recent_recommend = Recent()  # /v1/recommend latencies, for the console
        self.recent_host = Recent()  # host end-to-end latencies, for the console

    def catch_up(self, counter: Counter, total: float) -> None:
        """Advance `counter` to `total`, a count kept elsewhere (the live state's, the decoder's)."""
        counter.inc(total - self._counted.get(counter, 0))
        self._counted[counter] = total

    def render(self) -> bytes:
        return generate_latest(self.registry)
