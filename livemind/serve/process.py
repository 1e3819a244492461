"""One way to run `livemind serve` as its own process: start it, wait for `/readyz`, stop it (or
`kill -9` it), for the demo, the benchmarks and the tests alike; and one way to pick a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from livemind.errors import DataError


def free_port() -> int:
    """A TCP port free on loopback now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        t0 = time.perf_counter()
        while True:
            try:
                r = httpx.get(self.url + "/readyz", timeout=2)
                if r.status_code == 200 and (self.ready is None or self.ready(r.json())):
                    return time.perf_counter() - t0
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.perf_counter() - t0 > timeout:
                self.kill9()
                tail = self.log.read_text()[-2000:] if self.log is not None and self.log.is_file() else ""
                raise DataError(f"the service did not become ready (exit code {self.proc.returncode}): {tail}")
            time.sleep(0.2)

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
