"""Polling until a condition holds, bounded: the one waiting helper every test layer shares.

``wait_for`` (blocking) and ``until`` (async) take the same arguments: a predicate, what it waits for
(named in the timeout message), the timeout in seconds. They return the predicate's first truthy
value. Errors a live system gives while it starts or restarts (``OSError``, HTTP client errors, SQLite
errors, a missing key in a partial answer) count as "not yet"; the last one is named on timeout.

Async tests: ``until`` runs a blocking predicate in a worker thread, so a predicate that calls the API with
a blocking client does not stall the event loop the test's own simulated agents run on; ``on_loop``
evaluates it on the loop, often (predicates over in-process objects, which a thread would race, or
objects bound to the loop's thread such as an SQLite connection). An ``async`` predicate is awaited.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import httpx

RETRIED: tuple[type[BaseException], ...] = (OSError, KeyError, sqlite3.Error, httpx.HTTPError)


def _expired(timeout: float, what: str, last: BaseException | None) -> AssertionError:
    extra = f" (last error: {type(last).__name__}: {last})" if last is not None else ""
    return AssertionError(f"timed out after {timeout:g} s waiting for {what}{extra}")


def _check(what: object, timeout: object) -> None:
    if not isinstance(what, str) or isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"wait_for/until(pred, what: str, timeout: float), got what={what!r} timeout={timeout!r}")


def wait_for(pred: Callable[[], Any], what: str = "condition", timeout: float = 15.0, *, interval: float = 0.1,
             retry: tuple[type[BaseException], ...] = RETRIED) -> Any:
    """Poll ``pred`` until it returns something truthy and return that; AssertionError after ``timeout``."""
    _check(what, timeout)
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except retry as exc:
            last = exc
        if time.monotonic() > deadline:
            raise _expired(timeout, what, last)
        time.sleep(interval)


async def until(pred: Callable[[], Any], what: str = "condition", timeout: float = 15.0, *, interval: float = 0.1,
                retry: tuple[type[BaseException], ...] = RETRIED) -> Any:
    """``wait_for`` for async tests; a blocking predicate runs in a worker thread."""
    return await _poll(pred, what, timeout, interval, retry, thread=True)


async def on_loop(pred: Callable[[], Any], what: str = "condition", timeout: float = 15.0, *,
                  interval: float = 0.01, retry: tuple[type[BaseException], ...] = RETRIED) -> Any:
    """``wait_for`` for async tests over in-process state: the predicate runs on the event loop."""
    return await _poll(pred, what, timeout, interval, retry, thread=False)


async def _poll(pred: Callable[[], Any], what: str, timeout: float, interval: float,
                retry: tuple[type[BaseException], ...], *, thread: bool) -> Any:
    _check(what, timeout)
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    is_async = inspect.iscoroutinefunction(pred)
    while True:
        try:
            if is_async:
                value = await pred()
            elif thread:
                value = await asyncio.to_thread(pred)
            else:
                value = pred()
            if value:
                return value
        except retry as exc:
            last = exc
        if time.monotonic() > deadline:
            raise _expired(timeout, what, last)
        await asyncio.sleep(interval)
