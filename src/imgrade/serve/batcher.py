"""Micro-batching: images from concurrent requests share forward passes on one model thread.

A network grades 32 images in little more time than one, so under load the service answers
many requests with one pass. Each request submits its images and awaits a future; one asyncio
task collects what is queued for up to ``window_s`` seconds or until ``max_batch`` images, runs
the model on their concatenation in a single-thread executor (so passes never overlap and the
event loop stays free), and hands each request its slice of the outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from imgrade.runtime.grading import Outputs

logger = logging.getLogger(__name__)

Forward = Callable[[np.ndarray], Outputs]
"""The model: uint8 images (N, H, W, 3) -> Outputs, e.g. ``Engine.outputs``."""


@dataclass
class _Job:
    """One request's images (at most ``max_batch`` of them) and where its outputs go."""

    images: np.ndarray  # (n, H, W, 3) uint8
    future: asyncio.Future[Outputs]


@dataclass
class BatchStats:
    """What the batcher has done since it started (served at ``GET /v1/stats``)."""

    forward_passes: int = 0
    images: int = 0
    largest_batch: int = 0

    def record(self, batch_size: int) -> None:
        self.forward_passes += 1
        self.images += batch_size
        self.largest_batch = max(self.largest_batch, batch_size)

    def to_dict(self) -> dict[str, Any]:
        """The counters plus the mean images per forward pass (0 before the first).

        >>> stats = BatchStats()
        >>> stats.record(3); stats.record(5)
        >>> stats.to_dict()
        {'forward_passes': 2, 'images': 8, 'largest_batch': 5, 'mean_batch_size': 4.0}
        """
        mean = self.images / self.forward_passes if self.forward_passes else 0.0
        return {**asdict(self), "mean_batch_size": round(mean, 3)}


class Batcher:
    """Groups the images of concurrent :meth:`submit` calls into few calls of ``forward``.

    Start it with :meth:`start` and stop it with :meth:`stop` inside the event loop that calls
    :meth:`submit` (the app's lifespan does both).

    Args:
        forward: the model, called on one dedicated thread.
        max_batch: most images in one call of ``forward``; larger requests are split.
        window_s: how long to wait for more requests once one is queued.
    """

    def __init__(self, forward: Forward, max_batch: int, window_s: float) -> None:
        self._forward = forward
        self._max_batch = max_batch
        self._window_s = window_s
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the collecting task and the model thread."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgrade-model")
        self._task = asyncio.create_task(self._run(), name="imgrade-batcher")

    async def stop(self) -> None:
        """Stop collecting; requests still waiting get an error instead of hanging."""
        assert self._task is not None and self._executor is not None, "stop() follows start()"
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, images: np.ndarray) -> Outputs:
        """The model's outputs for uint8 images (N, H, W, 3), batched with other requests'.

        Raises:
            Exception: whatever ``forward`` raised on these images.
        """
        assert self._queue is not None, "the batcher runs inside the app's lifespan"
        loop = asyncio.get_running_loop()
        futures = []
        for start in range(0, len(images), self._max_batch):
            job = _Job(images[start : start + self._max_batch], loop.create_future())
            self._queue.put_nowait(job)
            futures.append(job.future)
        return Outputs.concatenate(await asyncio.gather(*futures))

    async def _run(self) -> None:
        """Collect a batch, run it, repeat; on cancellation fail every job not yet answered."""
        assert self._queue is not None
        held: list[_Job] = []  # taken off the queue, not answered yet
        try:
            while True:
                if not held:
                    held.append(await self._queue.get())
                left_over = await self._collect(held)
                await self._run_batch(held)
                held = [left_over] if left_over else []
        finally:
            while not self._queue.empty():
                held.append(self._queue.get_nowait())
            _fail(held, RuntimeError("the server is shutting down: send the request again once it is back"))

    async def _collect(self, jobs: list[_Job]) -> _Job | None:
        """Add queued jobs to ``jobs`` until the window closes or the batch is full.

        Returns the job that did not fit (it opens the next batch), or None.
        """
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._window_s
        size = sum(len(job.images) for job in jobs)
        while size < self._max_batch:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                job = self._queue.get_nowait()
            if size + len(job.images) > self._max_batch:
                return job
            jobs.append(job)
            size += len(job.images)
        return None

    async def _run_batch(self, jobs: list[_Job]) -> None:
        """One forward pass for ``jobs``; when it fails, each job alone, so only the bad ones fail."""
        images = np.concatenate([job.images for job in jobs]) if len(jobs) > 1 else jobs[0].images
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._forward, images)
        except Exception as error:
            if len(jobs) > 1:
                for job in jobs:
                    await self._run_batch([job])
                return
            logger.exception("a forward pass on %d images failed", len(images))
            _fail(jobs, error)
            return
        self.stats.record(len(images))
        start = 0
        for job in jobs:
            stop = start + len(job.images)
            if not job.future.done():  # done: the request was cancelled (client gone)
                job.future.set_result(outputs[start:stop])
            start = stop


def _fail(jobs: list[_Job], error: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)
