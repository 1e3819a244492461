"""`livemind cluster up`: a local cluster on one machine, for development, tests and benchmarks.

One `redis-server` (AOF on, `appendfsync always` by default: an acknowledged event is on disk), the
archive and state workers, `workers` tokenizer workers (shards 0/n .. n-1/n) and `replicas`
`livemind serve --broker` processes on consecutive ports. Every process is the same command one
would start by hand on its own machine (`commands` lists them); here they are children of this one,
logged to `DIR/logs/NAME.log`, and stopped in reverse order by `down` (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from livemind.errors import ConfigError
from livemind.serve.process import free_port, redis_command, wait_ready, wait_redis


@dataclass(frozen=True)
class ClusterConfig:
    tokenizer: Path  # a tokenizer folder (livemind rec tokenizer fit)
    generator: Path  # a generator checkpoint (livemind rec train / align)
    dir: Path = Path("runs/cluster")  # Redis's data (AOF), the archive, the logs
    workers: int = 1  # tokenizer workers (shards)
    replicas: int = 1  # recommender replicas, on ports port .. port + replicas - 1
    port: int = 8000
    redis_port: int | None = None  # None: a free one
    fsync: Literal["always", "everysec"] = "always"  # Redis appendfsync: always = an ack is on disk
    cache: Path | None = None  # the segment-embedding cache of the tokenizer workers
    threads: int = 1  # torch threads per process
    claim_idle_ms: int = 10_000  # a worker's pending entries are taken over after this idle time
    env: dict[str, str] = field(default_factory=dict)  # extra environment of the children

    def __post_init__(self) -> None:
        if self.workers < 1 or self.replicas < 1:
            raise ConfigError(f"--workers and --replicas must be >= 1, got {self.workers}, {self.replicas}")
        if self.fsync not in ("always", "everysec"):
            raise ConfigError(f"fsync {self.fsync!r}: expected always or everysec")


class Cluster:
    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        self.redis_port = cfg.redis_port or free_port()
        self.broker = f"redis://127.0.0.1:{self.redis_port}/0"
        self.procs: dict[str, subprocess.Popen] = {}
        self.urls = [f"http://127.0.0.1:{cfg.port + i}" for i in range(cfg.replicas)]
        (cfg.dir / "logs").mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------ the processes

    def commands(self) -> dict[str, list[str]]:
        """Each process's command line, by name."""
        c, cli = self.cfg, [sys.executable, "-m", "livemind.cli"]
        out = {"redis": redis_command(self.redis_port, c.dir, c.fsync)}
        common = ["--broker", self.broker, "--claim-idle-ms", str(c.claim_idle_ms)]
        out["archive"] = cli + ["worker", "archive", *common, "--store", str(c.dir / "archive.duckdb")]
        out["state"] = cli + ["worker", "state", *common]
        for i in range(c.workers):
            out[f"tokenizer-{i}"] = cli + ["worker", "tokenizer", *common, "--shard", f"{i}/{c.workers}",
                                           "--tokenizer", str(c.tokenizer), "--threads", str(c.threads),
                                           *(["--cache", str(c.cache)] if c.cache else [])]
        for i in range(c.replicas):
            out[f"replica-{i}"] = cli + ["serve", "--broker", self.broker, "--tokenizer", str(c.tokenizer),
                                         "--generator", str(c.generator), "--port", str(c.port + i),
                                         "--threads", str(c.threads)]
        return out

    def start(self, name: str) -> None:
        logf = open(self.cfg.dir / "logs" / f"{name}.log", "ab")
        env = {**os.environ, "LIVEMIND_API_KEY": os.environ.get("LIVEMIND_API_KEY", ""), **self.cfg.env}
        self.procs[name] = subprocess.Popen(self.commands()[name], stdout=logf, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        logf.close()
        if name == "redis":
            wait_redis(self.redis_port, self.procs["redis"])

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        for i, url in enumerate(self.urls):
            wait_ready(url, self.procs[f"replica-{i}"], max(1.0, deadline - time.monotonic()),
                       self.cfg.dir / "logs" / f"replica-{i}.log")

    def up(self) -> Cluster:
        names = list(self.commands())
        for name in names:
            self.start(name)
        self.wait_ready()
        return self

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def stop(self, name: str, timeout: float = 20.0) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def down(self) -> None:
        """Replicas, then workers, then Redis (which writes its AOF out on SIGTERM)."""
        for name in reversed(list(self.procs)):
            self.stop(name)

    def __enter__(self) -> Cluster:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
