"""A clock the tests move by hand, so that expiry is checked without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class MovableClock:
    """Satisfies worker.domain.aliases.Clock; starts at 2025-01-01 UTC unless told otherwise."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = _aware(start or datetime(2025, 1, 1, tzinfo=UTC))

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now

    def set(self, when: datetime) -> None:
        self._now = _aware(when)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return value.astimezone(UTC)
