"""Which services a `ct run WORKER` process runs: the one composition root for all of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from worker.codec import SingleObjectCodec
from worker.config import Settings
from worker.crypto import AddressCipher
from worker.service import Service


def build_services(worker: str, settings: Settings) -> list[Service]:
    """Raises ConfigError (one line naming the variable) before anything starts."""
    from worker.apps.notifier import NotifierService
    from worker.apps.outbound import MailKeys
    from worker.apps.projector import ProjectorService
    from worker.apps.relay import RelayService

    codec = SingleObjectCodec()
    needs_key = worker in {"notifier", "relay", "all"}
    cipher = AddressCipher(settings.data_keys()) if needs_key else None
    # Loaded now, so that an unreadable or weak DKIM key stops the process before it starts.
    keys = MailKeys.load(settings) if needs_key else None
    factories: dict[str, Callable[[], Service]] = {
        "notifier": lambda: NotifierService(settings, codec, _required(cipher), _required(keys)),
        "relay": lambda: RelayService(settings, codec, _required(cipher), _required(keys)),
        "projector": lambda: ProjectorService(settings, codec),
    }
    names = list(factories) if worker == "all" else [worker]
    return [factories[name]() for name in names]


T = TypeVar("T")


def _required(value: T | None) -> T:
    if value is None:
        raise AssertionError("a worker that needs the keys was built without them")
    return value
