"""What every store concern shares: the pool, row helpers, lock ordering, and error translation."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from relay.errors import StoreUnavailable
from relay.store.batch import BatchInterrupted

T = TypeVar("T")
R = TypeVar("R")
C = TypeVar("C", bound=type)

# What "the database or the network hiccuped" looks like below the store boundary; above it, the
# pipeline and the workers see StoreUnavailable only.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError,
    BatchInterrupted,
)


def unavailable(exc: BaseException) -> StoreUnavailable:
    """The project's error for a database failure, naming what the library said."""
    return StoreUnavailable(f"database unavailable: {type(exc).__name__}: {exc}")


def translated(cls: C) -> C:
    """Wrap each public coroutine method of a store class so that database failures leave it as
    StoreUnavailable (errors worded for the user, StoreError, pass through untouched)."""
    for name, fn in list(vars(cls).items()):
        if name.startswith("_") or not inspect.iscoroutinefunction(fn):
            continue
        setattr(cls, name, _translating(fn))
    return cls


def _translating(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except DATABASE_ERRORS as exc:
            raise unavailable(exc) from exc
    return run


def item_error(exc: Exception) -> bool:
    """Could this error of a batched statement be one row's fault (a constraint, a deadlock)?
    A lost connection or a server shutting down is everybody's: no point retrying one by one."""
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(
        exc, (asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError))


def in_lock_order(batch: Sequence[T], key: Callable[[T], Any]) -> tuple[list[T], list[int]]:
    """The batch sorted by the rows its items lock (accounts first) and where each item went.

    Two batches that take account rows in the same order cannot deadlock over them, whether they
    run in this process (an admit batch beside a finalize batch) or in another instance; any other
    deadlock PostgreSQL breaks, and the Batcher reruns the items one by one.
    """
    order = sorted(range(len(batch)), key=lambda i: key(batch[i]))
    return [batch[i] for i in order], order


def unsorted(results: Sequence[R], order: list[int]) -> list[R]:
    """Results of a batch run in lock order, put back in the order the items came."""
    out: list[R] = [None] * len(order)  # type: ignore[list-item]
    for result, i in zip(results, order, strict=True):
        out[i] = result
    return out


def row(record: asyncpg.Record) -> dict[str, Any]:
    """A record as a plain dict."""
    return dict(record.items())


class StoreBase:
    """The pool every concern's queries run on, and the DSN it was opened with (None: unknown)."""

    pool: asyncpg.Pool
    dsn: str | None = None
    instance_id: int | None = None  # what this process's rows name as their instance (store/instance.py)
