"""Running workers: signals, a bounded graceful shutdown, and the health/metrics endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Sequence

import structlog

from worker.apps.failures import explain
from worker.core.config import ConfigError, Settings
from worker.core.http import serve_http
from worker.core.service import Service

log = structlog.get_logger(__name__)


async def run_services(settings: Settings, services: Sequence[Service]) -> int:
    """Run services side by side until SIGTERM/SIGINT or until one of them fails.

    Returns the process exit code: 0 after a clean shutdown, 1 when a service failed, 2 when it
    failed on its configuration (credentials, certificates, ACLs, a missing topic: retrying as
    is cannot help, so the orchestrator's restart loop, with its backoff, is the right place).
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    http = await serve_http(settings, services) if settings.http_port else None
    # What exists by now (modules, classes, settings, keys) lives as long as the process: frozen,
    # the collector's full passes no longer walk it, and each pause of the event loop (every
    # email in flight waits in it) is shorter by that walk (docs/performance.md).
    gc.freeze()
    tasks = {asyncio.create_task(s.run(stopping), name=s.name): s for s in services}
    log.info("started", services=[s.name for s in services])
    failed = False
    misconfigured = False
    try:
        pending: set[asyncio.Task[None]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if error is not None:
                    failed = True
                    problem = explain(error, settings)
                    if problem is None:
                        log.error("service_failed", service=task.get_name(), exc_info=error)
                    else:
                        # The fix in one line; a traceback would only bury it.
                        misconfigured = misconfigured or isinstance(problem, ConfigError)
                        log.error("service_failed", service=task.get_name(), fix=str(problem))
                elif not stopping.is_set():
                    log.warning("service_exited", service=task.get_name())
            stopping.set()  # one service down takes the process down: the orchestrator restarts it
            if pending:
                # Each service bounds its own drain by the grace period; this is the backstop.
                done, pending = await asyncio.wait(pending, timeout=settings.shutdown_grace_s + 10)
                for task in pending:
                    task.cancel()
                    failed = True
                    log.error("service_did_not_stop", service=task.get_name())
                pending = set()
    finally:
        if http is not None:
            http.close()
            with contextlib.suppress(Exception):
                await http.wait_closed()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped", clean=not failed)
    return 2 if misconfigured else 1 if failed else 0
