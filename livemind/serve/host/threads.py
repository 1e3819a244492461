"""Per-thread CPU threads for the host's decoder: its thread runs torch's ops on every core while the
rest of the service keeps one (two OpenMP teams on a small machine slow each other down)."""

from __future__ import annotations

import ctypes
import os

import torch


def own_threads(n: int) -> None:
    """The calling thread runs torch's CPU ops on `n` OpenMP threads; other threads keep theirs.

    With libgomp (torch's Linux wheels) this is its own `omp_set_num_threads`, per thread, where
    `torch.set_num_threads` also changes the count every new thread starts with. It matters on a
    small machine: libgomp lets a team's threads spin between ops only while the process's
    OpenMP threads fit the cores, so the host's decoder runs fast on all cores only when every
    other thread stays at one (`livemind serve` does that: on 2 cores, int8 SmolLM2 decoding in
    the decoder thread took 18.4 ms a token with the main thread's team alive, 10.5 ms without).
    """
    torch.get_num_threads()  # torch's per-thread first-use setting runs now, not after ours
    path = _libgomp()
    if path is None:
        torch.set_num_threads(n)
        return
    ctypes.CDLL(path).omp_set_num_threads(n)
    try:  # MKL (float32 matrix products) keeps its own per-thread count, which torch.set_num_threads also sets
        mkl = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        mkl.mkl_set_num_threads_local(ctypes.byref(ctypes.c_int(n)))  # the exported symbol reads its argument by address
    except (OSError, AttributeError):  # a torch without MKL inside: its float32 products use OpenMP's count
        pass


def _libgomp() -> str | None:
    """The libgomp torch loaded (Linux), if any: torch's own when it has one (faiss brings another)."""
    try:
        with open("/proc/self/maps") as maps:
            found = {line.split()[-1] for line in maps if "libgomp" in line.rsplit("/", 1)[-1]}
    except OSError:
        return None
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    return min(found, key=lambda path: not path.startswith(torch_lib)) if found else None
