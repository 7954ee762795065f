"""What every long-running part of a worker process is, to the runtime and the health endpoint."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod


class Service(ABC):
    name: str

    @abstractmethod
    async def run(self, stopping: asyncio.Event) -> None:
        """Work until `stopping` is set, then finish in-flight work and close clients."""

    @abstractmethod
    def is_ready(self) -> bool:
        """True while the service is connected and doing its work."""
