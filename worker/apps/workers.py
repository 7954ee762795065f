"""Which services a `ct run WORKER...` process runs: the one composition root for all of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.core.service import Service

WORKERS = ("notifier", "relay", "projector", "web")


def build_services(workers: Sequence[str], settings: Settings) -> list[Service]:
    """Raises ConfigError (one line naming the variable) before anything starts.

    `all` stands for every worker, the web console included.
    """
    from worker.adapters.event_wire import EventWire
    from worker.apps.notifier import NotifierService
    from worker.apps.projector import ProjectorService
    from worker.apps.relay import RelayService
    from worker.apps.web import WebService
    from worker.services.outbound import MailKeys

    names = list(dict.fromkeys(WORKERS if "all" in workers else workers))
    # One per process: its registry client and its cache of writer schemas are shared.
    codec = EventWire(settings)
    needs_key = bool({"notifier", "relay", "web"} & set(names))
    cipher = AddressCipher(settings.data_keys()) if needs_key else None
    # Loaded now, so that an unreadable or weak DKIM key stops the process before it starts.
    sends_mail = bool({"notifier", "relay"} & set(names))
    keys = MailKeys.load(settings) if sends_mail else None
    factories: dict[str, Callable[[], Service]] = {
        "notifier": lambda: NotifierService(settings, codec, _required(cipher), _required(keys)),
        "relay": lambda: RelayService(settings, codec, _required(cipher), _required(keys)),
        "projector": lambda: ProjectorService(settings, codec),
        "web": lambda: WebService(settings, _required(cipher)),
    }
    return [factories[name]() for name in names]


T = TypeVar("T")


def _required(value: T | None) -> T:
    if value is None:
        raise AssertionError("a worker that needs the keys was built without them")
    return value
