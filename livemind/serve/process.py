"""One way to run `livemind serve` as its own process: start it, wait for `/readyz`, stop it (or
`kill -9` it), for the demo, the cluster, the benchmarks and the tests alike; one way to pick a
free port; and one way to start a loopback redis-server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from livemind.errors import ConfigError, DataError, need


def free_port() -> int:
    """A TCP port free on loopback now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float, log: Path | None = None,
               ready: Callable[[dict], bool] | None = None) -> float:
    """Poll `url`/readyz until a 200 (that `ready` accepts); returns the seconds it took. A process
    that exits, says it cannot become ready (a 503 with `"retry": false`: its models failed to load),
    or is not ready within `timeout`, is a DataError quoting /readyz or the end of its log."""
    t0 = time.perf_counter()
    while True:
        try:
            r = httpx.get(url + "/readyz", timeout=2)
            if r.status_code == 200 and (ready is None or ready(r.json())):
                return time.perf_counter() - t0
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            if r.status_code == 503 and body.get("retry") is False:
                raise DataError(f"the service at {url} cannot become ready: {body['error'].removeprefix('not ready: ')}")
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.perf_counter() - t0 > timeout:
            tail = log.read_text()[-2000:] if log is not None and log.is_file() else ""
            raise DataError(f"the service at {url} did not become ready (exit code {proc.poll()}): {tail}")
        time.sleep(0.1)


def redis_command(port: int, folder: Path, fsync: str = "always") -> list[str]:
    """A loopback redis-server with its append-only file in `folder` (`appendfsync always`: an
    acknowledged write is on disk), no RDB snapshots."""
    server = shutil.which("redis-server")
    if server is None:
        raise ConfigError("redis-server is not installed (apt-get install redis-server)")
    return [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(Path(folder).resolve()),
            "--appendonly", "yes", "--appendfsync", fsync, "--save", "", "--protected-mode", "no"]


def wait_redis(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Block until the redis-server on `port` answers PING (a DataError if it exits or times out)."""
    redis = need("redis", "broker", "starting redis-server")
    client = redis.Redis(port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                if proc.poll() is not None:
                    break
                time.sleep(0.025)
    finally:
        client.close()
    raise DataError(f"redis-server on port {port} did not start")


class ServiceProcess:
    """`python -m livemind.cli serve ARGS --port P` on loopback, its output in `log` (or discarded).

    `ready(body)`: whether a 200 from /readyz means ready for the caller (e.g. the host is loaded
    too); `env`: variables set for the service (`LIVEMIND_API_KEY` is cleared unless given)."""

    def __init__(self, args: Sequence[str], log: Path | None = None, env: dict[str, str] | None = None,
                 ready: Callable[[dict], bool] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "livemind.cli", "serve", *map(str, args), "--port", str(self.port)]
        self.log, self.env, self.ready = log, {"LIVEMIND_API_KEY": "", **(env or {})}, ready
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300.0) -> float:
        """Start it and wait until it is ready; returns the seconds that took. A service that exits or
        is not ready within `timeout` is a DataError quoting the end of its log."""
        out = open(self.log, "w") if self.log is not None else subprocess.DEVNULL  # noqa: SIM115 (the child's)
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        try:
            return wait_ready(self.url, self.proc, timeout, self.log, self.ready)
        except DataError:
            self.kill9()
            raise

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> None:
        """Ctrl-C (the service shuts down cleanly), then kill -9 if it has not within `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def __enter__(self) -> ServiceProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
