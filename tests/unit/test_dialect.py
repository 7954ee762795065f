"""Which dialect the adapters speak: detected from buildInfo, or set by CT_MONGO_DIALECT."""

from __future__ import annotations

import dataclasses

import pytest

from worker.adapters.dialect import FERRETDB, FERRETDB_ID_LISTS, MONGODB, dialect_of
from worker.core.config import ConfigError, load_settings


def test_ferretdb_names_itself_in_build_info_and_mongodb_does_not() -> None:
    assert dialect_of({"version": "7.0.77", "ferretdbVersion": "v1.24.2"}) is FERRETDB
    assert dialect_of({"version": "8.0.4", "gitVersion": "abc"}) is MONGODB


def test_what_each_dialect_can_do() -> None:
    assert (MONGODB.in_pushdown, MONGODB.guarded_updates) == (True, True)
    assert (FERRETDB.in_pushdown, FERRETDB.guarded_updates) == (False, False)
    # The local stack's build: lists of _ids within its pushdown bound, nothing else assumed.
    assert dataclasses.replace(FERRETDB, in_pushdown=True, ids_per_query=1000) == FERRETDB_ID_LISTS
    # FerretDB v1 wedges on a command with 100 or more matched updates.
    assert FERRETDB.writes_per_command < 100


def test_the_override_is_a_setting_with_a_one_line_error() -> None:
    assert load_settings(mongo_dialect="ferretdb").mongo_dialect == "ferretdb"
    assert load_settings().mongo_dialect is None
    with pytest.raises(ConfigError, match=r"^CT_MONGO_DIALECT is invalid"):
        load_settings(mongo_dialect="postgres")
