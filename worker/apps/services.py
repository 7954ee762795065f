"""Which services a `ct run WORKER` process runs: the one composition root for all of them."""

from __future__ import annotations

from worker.apps.runtime import Service
from worker.codec import SingleObjectCodec
from worker.config import Settings


def build_services(worker: str, settings: Settings) -> list[Service]:
    from worker.apps.projector import ProjectorService

    codec = SingleObjectCodec()
    factories = {
        "projector": lambda: ProjectorService(settings, codec),
    }
    names = list(factories) if worker == "all" else [worker]
    return [factories[name]() for name in names]
