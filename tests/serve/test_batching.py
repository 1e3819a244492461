"""Dynamic batching: requests that queue while a pass runs share the next pass; a request that finds
the worker idle starts at once unless `max_wait` asks it to wait for company."""

import asyncio
import time

import pytest

from livemind.serve.rec.batching import Batcher


def _recorder(seconds: float) -> tuple[list[list[int]], object]:
    batches: list[list[int]] = []

    def fn(items: list[int]) -> list[int]:
        batches.append(list(items))
        time.sleep(seconds)
        return [i * 10 for i in items]

    return batches, fn


def test_requests_queued_during_a_pass_share_the_next_one_and_each_gets_its_own_answer():
    batches, fn = _recorder(0.2)

    async def run() -> list[int]:
        b = Batcher(fn, max_batch=4, max_wait=0.0)
        first = asyncio.create_task(b.submit(1))
        await asyncio.sleep(0.05)  # the first pass is running: the next six queue behind it
        rest = [asyncio.create_task(b.submit(i)) for i in range(2, 8)]
        out = await asyncio.gather(first, *rest)
        await b.close()
        return out

    assert asyncio.run(run()) == [10, 20, 30, 40, 50, 60, 70]
    assert batches == [[1], [2, 3, 4, 5], [6, 7]]  # at most max_batch a pass, in arrival order


@pytest.mark.parametrize("max_wait, together", [(0.0, False), (0.3, True)])
def test_a_request_that_finds_the_worker_idle_waits_only_when_asked(max_wait, together):
    batches, fn = _recorder(0.0)

    async def run() -> float:
        b = Batcher(fn, max_batch=8, max_wait=max_wait)
        t0 = time.perf_counter()
        first = asyncio.create_task(b.submit(1))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(b.submit(2))
        await asyncio.gather(first, second)
        await b.close()
        return time.perf_counter() - t0

    elapsed = asyncio.run(run())
    assert batches == ([[1, 2]] if together else [[1], [2]])
    assert (elapsed >= 0.1) and (elapsed < 0.3 if not together else elapsed >= 0.3)


def test_a_failing_pass_fails_each_of_its_callers_and_the_next_pass_still_runs():
    calls: list[list[int]] = []

    def fn(items: list[int]) -> list[int]:
        calls.append(list(items))
        if 0 in items:
            raise ValueError("bad item 0")
        return items

    async def run() -> tuple:
        b = Batcher(fn, max_batch=8, max_wait=0.05)
        got = await asyncio.gather(b.submit(0), b.submit(5), return_exceptions=True)
        after = await b.submit(7)
        await b.close()
        return got, after

    got, after = asyncio.run(run())
    assert [type(g).__name__ for g in got] == ["ValueError", "ValueError"] and after == 7
    assert calls == [[0, 5], [7]]
