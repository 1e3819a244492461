"""Prometheus metrics of one service instance (its own registry: no module globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


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

    def render(self) -> bytes:
        return generate_latest(self.registry)
