"""Polling until a condition holds, bounded: the one helper the integration tests share.

``until`` runs the predicate in a worker thread, so a predicate that calls the API with a blocking
client does not stall the event loop the test's own simulated agents run on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def wait_for(pred: Callable[[], Any], timeout: float = 15.0, what: str = "condition", interval: float = 0.1) -> Any:
    """Poll ``pred`` until it returns something truthy and return that; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


async def until(pred: Callable[[], Any], timeout: float = 15.0, what: str = "condition", interval: float = 0.1) -> Any:
    """``wait_for`` for async tests."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(pred)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)
