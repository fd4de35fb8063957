"""Natural batching: calls that arrive while one is running share the next round trip."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class BatchInterrupted(Exception):
    """The batch a call was part of stopped before the call's result was known (shutdown)."""


class Batcher(Generic[T, R]):
    """Runs one item alone, or all items queued meanwhile as one batch; never waits to fill one.

    Under light load every call runs on its own at once, exactly as without a batcher. Under
    load, the calls that arrive while a round trip is in flight go together in the next one:
    one statement and one commit for many. When a batch fails, its items run again one by one,
    so a single bad item cannot fail the others. A caller that stops waiting does not stop its
    item: it still runs, like a call already sent.
    """

    def __init__(self, one: Callable[[T], Awaitable[R]],
                 many: Callable[[Sequence[T]], Awaitable[Sequence[R]]], max_batch: int = 64,
                 item_error: Callable[[Exception], bool] = lambda exc: True) -> None:
        """item_error(exc): could exc be one item's fault (then the items run again one by one)?
        Otherwise (a lost connection, say) every item of the batch gets exc at once."""
        self._one = one
        self._many = many
        self._max = max_batch
        self._item_error = item_error
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None
        self.round_trips = 0  # statements run, batched or single (tests read it)

    async def __call__(self, item: T) -> R:
        """The result of running item (in a batch or alone); its exception if it failed."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._runner is None:
            # a task of its own: a caller being cancelled must not strand the queued items
            self._runner = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:self._max], self._queue[self._max:]
                try:
                    await self._run(batch)
                finally:
                    for _, future in batch:
                        _settle(future, exc=BatchInterrupted("stopped before the result was known"))
        finally:
            self._runner = None
            left, self._queue = self._queue, []  # only when cancelled between batches
            for _, future in left:
                _settle(future, exc=BatchInterrupted("stopped before the call ran"))

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        if len(batch) > 1:
            try:
                self.round_trips += 1
                results = await self._many([item for item, _ in batch])
            except Exception as exc:
                if not self._item_error(exc):
                    for _, future in batch:
                        _settle(future, exc=exc)
                    return
                log.warning("a batch of %d failed; running its items one by one", len(batch), exc_info=True)
            else:
                for (_, future), result in zip(batch, results, strict=True):
                    _settle(future, result)
                return
        for item, future in batch:
            try:
                self.round_trips += 1
                _settle(future, await self._one(item))
            except Exception as exc:  # the caller gets its own failure
                _settle(future, exc=exc)


def _settle(future: asyncio.Future[R], result: R | None = None, *, exc: BaseException | None = None) -> None:
    """Give a waiting caller its result or exception (unless it stopped waiting)."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]
