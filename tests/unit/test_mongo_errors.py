"""Which database errors the workers retry, and which they report."""

from __future__ import annotations

import pytest
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteError,
)

from worker.adapters.mongo import is_transient

FERRETDB_STOPPING = (
    "[msg_insert.go:168 handler.(*Handler).MsgInsert] "
    "[db.go:134 fsql.(*DB).InTransaction] context canceled"
)


def test_a_request_ferretdb_was_serving_when_it_stopped_is_retried() -> None:
    """Seen in the fault suite: FerretDB stopped mid-insert answers with its Go context's
    cancellation; dead-lettering that event would have lost its email."""
    details = {"ok": 0.0, "errmsg": FERRETDB_STOPPING, "code": 1, "codeName": "InternalError"}
    error = OperationFailure(FERRETDB_STOPPING, 1, details)
    assert is_transient(error)


@pytest.mark.parametrize(
    ("code", "name"),
    [(91, "ShutdownInProgress"), (11600, "InterruptedAtShutdown"), (10107, "NotWritablePrimary")],
)
def test_a_member_shutting_down_or_stepping_down_is_retried(code: int, name: str) -> None:
    assert is_transient(OperationFailure(name, code, {"code": code, "codeName": name}))


def test_a_write_the_server_labels_retryable_is_retried() -> None:
    details = {"code": 2, "errmsg": "x", "errorLabels": ["RetryableWriteError"]}
    assert is_transient(OperationFailure("x", 2, details))


@pytest.mark.parametrize(
    "error",
    [
        OperationFailure("some other internal error", 1, {"code": 1}),
        OperationFailure("not authorized on ct to execute command", 13, {"code": 13}),
        DuplicateKeyError("E11000 duplicate key", 11000),
        WriteError("Document failed validation", 121),
        ServerSelectionTimeoutError("SSL: CERTIFICATE_VERIFY_FAILED"),
    ],
    ids=["internal", "unauthorized", "duplicate", "validation", "untrusted-certificate"],
)
def test_answers_a_retry_cannot_change_are_not_retried(error: Exception) -> None:
    assert not is_transient(error)


def test_a_lost_connection_is_retried() -> None:
    assert is_transient(AutoReconnect("connection closed"))
