"""`ct check kafka|mongo|smtp`: wait until a server answers, for scripts and the local stack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiosmtplib

from worker.adapters import mongo, smtp_client
from worker.adapters.kafka_client import admin_client
from worker.core.config import ConfigError, Settings


async def kafka_answers(settings: Settings) -> None:
    async with admin_client(settings, "ct-check", request_timeout_ms=5000) as admin:
        await admin.list_topics()


async def mongo_answers(settings: Settings) -> None:
    client = mongo.connect(settings, app_name="ct-check", timeout_ms=2000)
    try:
        await client.admin.command("ping")
    finally:
        await client.close()


async def smtp_answers(host: str, port: int) -> None:
    """A plaintext SMTP server answers (the local sink)."""
    smtp = aiosmtplib.SMTP(hostname=host, port=port, timeout=5, start_tls=False)
    await smtp.connect()
    await smtp.noop()
    await smtp.quit()


async def smtp_upstream_answers(settings: Settings) -> None:
    """The upstream answers the way the workers use it: CT_SMTP_TLS and AUTH included."""
    await smtp_client.probe(settings.model_copy(update={"smtp_timeout_s": 5.0}))


async def wait_until(probe: Callable[[], Awaitable[None]], within: float) -> None:
    """Retry `probe` until it succeeds; raise TimeoutError carrying the last failure."""
    deadline = time.monotonic() + within
    while True:
        try:
            await asyncio.wait_for(probe(), timeout=max(1.0, deadline - time.monotonic()))
        except ConfigError:
            raise  # a refused password or certificate does not get better by waiting
        except (OSError, TimeoutError, Exception) as exc:  # noqa: BLE001 - any failure means "not yet"
            if time.monotonic() >= deadline:
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                raise TimeoutError(f"no answer after {within:.0f}s ({detail})") from None
            await asyncio.sleep(0.5)
        else:
            return
