"""Undoing a test's logging set-up completely, cached loggers included."""

from __future__ import annotations

import sys

import structlog
from structlog._config import BoundLoggerLazyProxy


def reset_logging() -> None:
    """structlog's defaults again, and no module logger still bound to the test's stream.

    configure_logging() caches each module's logger on first use (as production should), and
    reset_defaults() does not undo that: a logger first used during a capturing test would keep
    writing to that test's capture file after pytest closed it, and fail every later test that
    logs through it ("I/O operation on closed file"). structlog has no public way to forget a
    cached logger, so the proxies' cached `bind` is dropped here.
    """
    structlog.reset_defaults()
    for name, module in list(sys.modules.items()):
        if name.startswith("worker") and module is not None:
            for value in vars(module).values():
                if isinstance(value, BoundLoggerLazyProxy):
                    vars(value).pop("bind", None)
