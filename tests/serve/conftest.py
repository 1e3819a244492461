from __future__ import annotations

import dataclasses
import threading
import time

import httpx
import pytest
import torch
import uvicorn

from livemind.rec.data.room_signals import SIGNALS
from livemind.rec.model.checkpoint import save_generator
from livemind.rec.model.generator import GeneratorConfig, OneLiveGenerator
from livemind.rec.tokenizer.fit import fit_tokenizer
from livemind.serve.api.app import ServeConfig, create_app
from livemind.serve.process import free_port
from livemind.serve.rec.engine import EngineConfig
from tests.rec.tokenizer.test_tokenizer import FAST

START = 1767571200.0  # the tiny world's first hour starts here (TINY.start_time)


@pytest.fixture(scope="session")
def models(tiny_world, tmp_path_factory):
    """A hashing tokenizer fit on the tiny world's first 16 hours, and two generators (with the
    live-room prior and semantic codes) saved as checkpoints: `gen` and a differently seeded `gen2`."""
    _, world = tiny_world
    root = tmp_path_factory.mktemp("serve-models")
    split = world.meta["config"]["start_time"] + 16 * 3600
    tok = fit_tokenizer(world, dataclasses.replace(FAST, train_until=split)).tokenizer
    tok.save(root / "tok")
    cfg = GeneratorConfig(levels=2, codebook_size=16, d_model=16, n_heads=2, n_layers=1, max_history=8,
                          code_dim=FAST.fusion.out_dim, room_signals=len(SIGNALS))
    for name, seed in (("gen", 0), ("gen2", 1)):
        torch.manual_seed(seed)
        model = OneLiveGenerator(cfg)
        model.set_code_vectors(torch.from_numpy(tok.quantizer.centroids))
        with torch.no_grad():
            model.room_prior[-1].weight.mul_(20)  # a prior that matters, so that signals are tested
        save_generator(model.eval(), root / name, tok.version)
    return root, split


class Server:
    """A real uvicorn server on a free local port, in a thread of this process."""

    def __init__(self, cfg: ServeConfig, host=None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(cfg, host=host), host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.02)
        raise RuntimeError("the server did not start")

    def wait_ready(self, timeout: float = 60) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = httpx.get(self.url + "/readyz", timeout=5)
            if r.status_code == 200:
                return r.json()
            time.sleep(0.05)
        raise RuntimeError(f"not ready: {r.text}")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def serve_config(models, tmp_path):
    root, _ = models
    return ServeConfig(EngineConfig(root / "tok", root / "gen", tmp_path / "events.duckdb", cache=None))


class RedisServer:
    """A real redis-server on a free port with its data (AOF, fsync always) in a temporary folder."""

    def __init__(self, folder) -> None:
        from livemind.serve.process import free_port

        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self) -> RedisServer:
        import subprocess

        from livemind.serve.process import redis_command, wait_redis

        self.proc = subprocess.Popen(redis_command(self.port, self.folder), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_redis(self.port, self.proc)
        return self

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()
