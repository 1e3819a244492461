"""Dynamic batching: concurrent requests wait at most `max_wait` seconds to share one model call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class Batcher(Generic[In, Out]):
    """Collects submitted items; the first item of a batch waits up to `max_wait` s for up to
    `max_batch - 1` more, then `fn(items)` runs in one worker thread (the event loop stays free) and
    each caller gets its own result. A failing batch fails each of its callers with the error."""

    def __init__(self, fn: Callable[[list[In]], list[Out]], max_batch: int = 32, max_wait: float = 0.002,
                 on_batch: Callable[[int], None] | None = None) -> None:
        if max_batch < 1 or max_wait < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait >= 0, got {max_batch}, {max_wait}")
        self.fn, self.max_batch, self.max_wait, self.on_batch = fn, max_batch, max_wait, on_batch
        self._queue: asyncio.Queue[tuple[In, asyncio.Future[Out]]] | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="batcher")

    async def submit(self, item: In) -> Out:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run())
        fut: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - time.perf_counter()
                try:
                    batch.append(self._queue.get_nowait() if left <= 0 else await asyncio.wait_for(self._queue.get(), left))
                except (asyncio.QueueEmpty, TimeoutError):
                    break
            if self.on_batch:
                self.on_batch(len(batch))
            try:
                results = await loop.run_in_executor(self._pool, self.fn, [item for item, _ in batch])
            except Exception as exc:  # every caller of the batch gets the error
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), res in zip(batch, results):
                if not fut.done():
                    fut.set_result(res)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
