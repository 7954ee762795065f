"""What a failed worker or `ct` command tells its operator: one line naming what to fix."""

from __future__ import annotations

from worker.adapters import mongo
from worker.adapters.kafka_client import rejection
from worker.core.config import ConfigError, Settings, Unreachable


def explain(exc: BaseException, settings: Settings) -> ConfigError | Unreachable | None:
    """The operator's side of a failure (a setting, a credential, an ACL, a server that cannot
    be reached), or None for a bug, whose traceback is what its reader needs."""
    if isinstance(exc, ConfigError | Unreachable):
        return exc
    return mongo.explain(settings, exc) or rejection(
        exc, settings, user_of="a topic or group named by the CT_TOPIC_* and CT_GROUP_* settings"
    )
