"""Retrying transient failures with capped exponential backoff and full jitter."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from worker.core import metrics

log = structlog.get_logger(__name__)
T = TypeVar("T")


def backoff_delay(attempt: int, *, base: float = 0.1, cap: float = 30.0) -> float:
    """Full jitter (AWS architecture blog): spreads retries of many workers across the window."""
    return random.uniform(0, min(cap, base * 2**attempt))


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    name: str,
    is_transient: Callable[[BaseException], bool],
    max_delay: float = 30.0,
    max_attempts: int | None = None,
) -> T:
    """Run `operation` until it succeeds or fails permanently; transient errors are retried.

    With `max_attempts=None` it retries for as long as it takes: the callers are consumers that
    must not commit past work that has not been done, so giving up would mean losing it.
    """
    attempt = 0
    while True:
        try:
            return await operation()
        except Exception as exc:
            if not is_transient(exc) or (max_attempts is not None and attempt + 1 >= max_attempts):
                raise
            delay = backoff_delay(attempt, cap=max_delay)
            metrics.RETRIES.labels(operation=name).inc()
            log.warning(
                "retrying",
                operation=name,
                attempt=attempt + 1,
                delay_s=round(delay, 3),
                error=type(exc).__name__,
                detail=str(exc)[:200],
            )
            await asyncio.sleep(delay)
            attempt += 1
