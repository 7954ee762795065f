"""structlog set-up: JSON lines in production, key=value on a TTY, and no email address ever."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO, cast

import structlog

from worker.core.patterns import LinearMatch, LinearPattern

# An alias is safe to log; a real address is not. Aliases live under our own domain, so anything
# that looks like an address under another domain is masked, whatever field it hides in.
# RE2: linear whatever a value holds (a megabyte of address characters with no `@` in it made
# `re` retry from every position, quadratic, on the event loop).
_ADDRESS = LinearPattern(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?"
)

MAX_LOGGED_CHARS = 16 * 1024


class AddressRedactor:
    """structlog processor: replaces every email address outside the alias domain with a mask."""

    def __init__(self, alias_domain: str) -> None:
        self._domain = alias_domain.lower()

    def _mask(self, match: LinearMatch) -> str:
        domain = match.group(0).rsplit("@", 1)[1].lower()
        if domain == self._domain:
            return match.group(0)
        # A soft alias's domain embeds the real address ("john@x.com-<token>.ct.example.com"),
        # so it is masked like a real one.
        return "<redacted-address>"

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            if len(value) > MAX_LOGGED_CHARS:  # no log value needs more; bounds the work too
                value = _truncated(value)
            return _ADDRESS.sub(self._mask, value) if "@" in value else value
        if isinstance(value, Mapping):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set):
            return [self._clean(v) for v in value]
        if isinstance(value, BaseException):
            return self._clean(str(value))
        return value

    def __call__(
        self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            event_dict[key] = self._clean(value)
        return event_dict


def _truncated(value: str) -> str:
    """The first MAX_LOGGED_CHARS, less the word the cut went through: half an address
    ("jane.roe@") would no longer look like one to the redactor."""
    cut = value[:MAX_LOGGED_CHARS]
    if not value[MAX_LOGGED_CHARS].isspace():
        cut = cut[: len(cut.rstrip()) - len(cut.split()[-1])] if cut.split() else ""
    return cut + " (truncated)"


class _CurrentStderr:
    """sys.stderr as it is when a line is written, not when logging was set up: loggers are
    cached on first use, and a stream swapped meanwhile (a test's capture) may be closed."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


# aiokafka logs these errors, then raises them to the client's caller, where
# worker.adapters.kafka_client turns them into one line naming the setting or ACL to fix.
_AIOKAFKA_RAISED_TOO = (
    "Unable connect to",  # each bootstrap server it could not use
    "Unexpected error during InitProducerIdRequest",  # an idempotent producer refused
)


def _replaced_by_diagnosis(record: logging.LogRecord) -> bool:
    return not (
        record.name.startswith("aiokafka")
        and isinstance(record.msg, str)
        and record.msg.startswith(_AIOKAFKA_RAISED_TOO)
    )


def configure_logging(level: str, fmt: str, alias_domain: str) -> None:
    """Route structlog and the standard library's logging through one redacting pipeline."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        AddressRedactor(alias_domain),
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # PrintLogger needs only write() and flush() of its file.
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    handler.addFilter(_replaced_by_diagnosis)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Library chatter (aiokafka's reconnects, aiosmtpd's per-session lines) only at WARNING.
    root.setLevel(max(numeric_level, logging.WARNING))
