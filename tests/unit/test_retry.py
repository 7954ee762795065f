"""Retrying transient failures: full-jitter backoff, and nothing retried that cannot succeed."""

from __future__ import annotations

import asyncio
import random

import pytest

from worker.core.retry import backoff_delay, retry_transient


class Flaky(Exception):
    pass


class Broken(Exception):
    pass


@pytest.fixture(autouse=True)
def no_sleeping(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays asked for, without waiting them out."""
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return slept


def test_backoff_grows_exponentially_up_to_the_cap_with_full_jitter() -> None:
    random.seed(7)
    for attempt in range(12):
        ceiling = min(30.0, 0.1 * 2**attempt)
        delays = [backoff_delay(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # spread over the whole window, not clustered
    assert max(backoff_delay(40, cap=2.0) for _ in range(100)) <= 2.0


async def test_transient_failures_are_retried_until_success(no_sleeping: list[float]) -> None:
    outcomes: list[Exception | str] = [Flaky(), Flaky(), Flaky(), "done"]

    async def operation() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = await retry_transient(
        operation, name="t", is_transient=lambda e: isinstance(e, Flaky), max_delay=1.0
    )
    assert result == "done"
    assert len(no_sleeping) == 3
    assert all(0 <= d <= 1.0 for d in no_sleeping)


async def test_a_permanent_failure_is_raised_at_once(no_sleeping: list[float]) -> None:
    calls = 0

    async def operation() -> None:
        nonlocal calls
        calls += 1
        raise Broken("no")

    with pytest.raises(Broken):
        await retry_transient(operation, name="t", is_transient=lambda e: isinstance(e, Flaky))
    assert calls == 1
    assert no_sleeping == []


async def test_max_attempts_gives_up_with_the_last_transient_error() -> None:
    calls = 0

    async def operation() -> None:
        nonlocal calls
        calls += 1
        raise Flaky(str(calls))

    with pytest.raises(Flaky, match=r"^3$"):
        await retry_transient(
            operation, name="t", is_transient=lambda e: isinstance(e, Flaky), max_attempts=3
        )
    assert calls == 3
