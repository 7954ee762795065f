"""Abuse limits: sliding-window rate limits, and the refusal of marketing mail.

An alias that leaks must not become a channel to spam its owner. Mail from external senders
(anyone not authenticated as the order's customer or store) is counted per recipient alias, per
sending domain and per client IP over a sliding window; over a limit the relay answers
`451 4.7.1`, and the first refusal of a key in a window (per recipient alias) is recorded on the
order's timeline, so a flood leaves one entry, not thousands.

The counters live in the relay process (`SlidingWindowLimiter` holds them in memory): with N
relay replicas behind the MX records a sender may get up to N times a limit through. That is a
choice: shared counters would need atomic increments, and the shared database (FerretDB v1)
updates by read-modify-write, which loses concurrent increments. Set the limits per replica.

Pure: the limiter is given the time; it does no I/O.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from worker.domain.headers import ParsedMessage

Scope = Literal["alias", "domain", "ip"]
DEFAULT_MAX_KEYS: Final = 100_000


@dataclass(frozen=True, slots=True)
class RateLimit:
    scope: Scope
    limit: int  # messages per window; 0 means no limit
    window_s: float


@dataclass(frozen=True, slots=True)
class RateKeys:
    """What one message is counted under: its recipient alias, sending domain and client IP."""

    alias: str
    domain: str | None = None  # From's organisational domain
    ip: str | None = None

    def of(self, scope: Scope) -> str | None:
        return {"alias": self.alias, "domain": self.domain, "ip": self.ip}[scope]


@dataclass(frozen=True, slots=True)
class Admitted:
    """Counted in every window it belongs to."""


@dataclass(frozen=True, slots=True)
class OverLimit:
    scope: Scope
    key: str
    # True for the first refusal of this key to this alias in the window: record it.
    record: bool
    window_started: float  # when the refused streak began: derive the record's id from it


class SlidingWindowLimiter:
    """Exact sliding windows: the times of the messages admitted within the last window, per key.

    Memory is bounded: at most `limit` times per key, and `max_keys` keys per scope, the least
    recently seen forgotten first (a forgotten key starts its window afresh).
    """

    def __init__(self, limits: Sequence[RateLimit], *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self._limits = [limit for limit in limits if limit.limit > 0]
        self._max_keys = max_keys
        self._admitted: dict[Scope, OrderedDict[str, deque[float]]] = {
            limit.scope: OrderedDict() for limit in self._limits
        }
        # (scope, key, alias) -> when its current streak of refusals was first recorded.
        self._recorded: OrderedDict[tuple[Scope, str, str], float] = OrderedDict()

    def admit(self, keys: RateKeys, *, now: float) -> Admitted | OverLimit:
        """Count one message under its keys, or say which limit it is over.

        A refused message is not counted: a sender that keeps retrying does not extend its ban.
        """
        windows = []
        for limit in self._limits:
            key = keys.of(limit.scope)
            if not key:
                continue
            times = self._window(limit.scope, key, limit.limit)
            while times and times[0] <= now - limit.window_s:
                times.popleft()
            if len(times) >= limit.limit:
                return self._refusal(limit, key, keys.alias, now)
            windows.append(times)
        for times in windows:
            times.append(now)
        return Admitted()

    def _window(self, scope: Scope, key: str, limit: int) -> deque[float]:
        table = self._admitted[scope]
        times = table.get(key)
        if times is None:
            times = table[key] = deque(maxlen=limit)
            if len(table) > self._max_keys:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        return times

    def _refusal(self, limit: RateLimit, key: str, alias: str, now: float) -> OverLimit:
        streak = (limit.scope, key, alias)
        started = self._recorded.get(streak)
        record = started is None or now - started >= limit.window_s
        if record:
            started = now
            self._recorded[streak] = now
            if len(self._recorded) > self._max_keys:
                self._recorded.popitem(last=False)
        self._recorded.move_to_end(streak)
        return OverLimit(limit.scope, key, record, started if started is not None else now)


def marketing_markers(message: ParsedMessage | bytes) -> tuple[str, ...]:
    """The bulk or list markers a message carries (RFC 2369/2919 fields, Precedence)."""
    parsed = ParsedMessage.of(message)
    found = [name for name in ("List-Unsubscribe", "List-Id") if parsed.headers(name)]
    precedence = {value.strip().lower() for value in parsed.headers("Precedence")}
    found += [f"Precedence: {value}" for value in sorted(precedence & {"bulk", "list"})]
    return tuple(found)
