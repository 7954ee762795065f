"""What every command group shares: printing, the database of one command, its stores."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from worker.core.config import Settings

if TYPE_CHECKING:
    from worker.adapters.dialect import Dialect
    from worker.adapters.mongo import Database
    from worker.apps.builder import Stores


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[tuple[Database, Dialect]]:
    """The project's database and its server's dialect, for one command."""
    from worker.adapters import mongo
    from worker.adapters.dialect import detect_dialect

    client = mongo.connect(settings, app_name="ct-cli")
    try:
        db = client[settings.mongo_db]
        yield db, await detect_dialect(db, settings.mongo_dialect)
    finally:
        await client.close()


def stores(settings: Settings, db: Database, dialect: Dialect) -> Stores:
    """The stores as the workers build them, read afresh (no alias cache): what is stored now."""
    from worker.apps.builder import Stores
    from worker.core.crypto import AddressCipher

    return Stores(db, dialect, settings, AddressCipher(settings.data_keys()), cache_aliases=False)
