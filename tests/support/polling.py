"""Waiting for a condition that has no event to wait on: a file, a topic, another process."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

# A plain or an async function of nothing; typed loosely because its value is only tested.
Condition = Callable[[], Any]


async def until(condition: Condition, timeout: float, interval: float = 0.2) -> Any:
    """Poll `condition` (plain or async) until it is truthy; its value, or None at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(interval)


async def eventually(
    condition: Condition, *, timeout: float = 30.0, interval: float = 0.2, what: str = "it"
) -> Any:
    """`until`, for tests: fails with what was awaited when the timeout passes."""
    value = await until(condition, timeout, interval)
    if value is None:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    return value
