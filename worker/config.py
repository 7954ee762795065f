"""Settings for every `ct` process, read once from `CT_*` environment variables in `main()`."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

HostName = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9.\-:\[\]]+$")]
Port = Annotated[int, Field(ge=1, le=65535)]
ENCRYPTION_KEY_HINT = (
    "set CT_ENCRYPTION_KEY to 32 random bytes in urlsafe base64; make one with `ct keygen`"
)


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CT_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    kafka_bootstrap: str = Field(default="127.0.0.1:9092", min_length=3)
    mongo_uri: str = Field(default="mongodb://127.0.0.1:27017", pattern=r"^mongodb(\+srv)?://")
    mongo_db: str = Field(default="conversation_tracker", pattern=r"^[A-Za-z0-9_\-]{1,63}$")
    # Unset: detected from the server's buildInfo (see worker/adapters/dialect.py).
    mongo_dialect: Literal["mongodb", "ferretdb"] | None = None
    smtp_host: HostName = "127.0.0.1"
    smtp_port: Port = 1025
    smtp_pool_size: int = Field(default=8, ge=1, le=256)
    smtp_timeout_s: float = Field(default=30.0, gt=0)
    domain: str = Field(
        default="ct.example.com",
        max_length=200,
        pattern=r"^([a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
    )
    alias_ttl_days: int = Field(default=60, ge=1, le=3650)
    # Stores with aliasExpiry=orderFlow: aliases work this long after DELIVERED or CANCELED.
    alias_grace_days: int = Field(default=7, ge=1, le=365)
    # Orders whose aliases a worker keeps in memory (0: read MongoDB every time); see AliasStore.
    alias_cache_size: int = Field(default=2048, ge=0, le=1_000_000)
    encryption_key: SecretStr | None = None
    encryption_old_keys: SecretStr | None = None
    templates_dir: Path | None = None

    topic_order_status: str = "oms.order-status.v1"
    topic_timeline: str = "ct.timeline.v1"
    topic_dlq: str = "ct.dlq.v1"
    group_notifier: str = "ct-notifier"
    group_projector: str = "ct-projector"
    topic_partitions: int = Field(default=6, ge=1, le=10_000)
    topic_replication: int = Field(default=1, ge=1, le=32)

    batch_max_records: int = Field(default=500, ge=1, le=100_000)
    notifier_concurrency: int = Field(default=64, ge=1, le=10_000)
    # Emails a notifier may have had accepted upstream but not yet recorded in its ledger: the
    # most a kill can make it send twice. Raising it buys throughput (worker/apps/recorded_send.py).
    notifier_max_unrecorded: int = Field(default=1, ge=1, le=1_000)
    retry_max_delay_s: float = Field(default=30.0, gt=0)

    relay_host: HostName = "127.0.0.1"
    relay_port: Port = 2525
    relay_max_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    relay_tls_cert: Path | None = None
    relay_tls_key: Path | None = None

    # The console and HTTP API (`ct run web`).
    web_host: HostName = "127.0.0.1"
    web_port: Port = 8000
    # Secure cookies need HTTPS, which browsers grant to 127.0.0.1 and localhost as well.
    web_secure_cookies: bool = True
    web_session_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    web_session_max_hours: int = Field(default=12, ge=1, le=30 * 24)
    web_login_max_failures_per_user: int = Field(default=5, ge=1, le=1000)
    web_login_max_failures_per_address: int = Field(default=20, ge=1, le=100_000)
    web_login_window_s: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    # Proxies whose X-Forwarded-For/-Proto are believed (uvicorn's forwarded_allow_ips); none.
    web_forwarded_allow_ips: str = Field(default="", pattern=r"^[0-9A-Fa-f.:/,* ]*$")
    message_retention_days: int = Field(default=60, ge=1, le=3650)

    http_host: HostName = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535)  # 0: no HTTP endpoint
    shutdown_grace_s: float = Field(default=15.0, ge=0)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("domain", mode="before")
    @classmethod
    def _lowercase_domain(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("encryption_key", "encryption_old_keys")
    @classmethod
    def _check_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for part in value.get_secret_value().split(","):
                decode_key(part)
        return value

    def data_keys(self) -> list[bytes]:
        """The current encryption key first, then retired ones still needed to read old aliases."""
        if self.encryption_key is None:
            raise ConfigError(f"CT_ENCRYPTION_KEY is not set: {ENCRYPTION_KEY_HINT}")
        keys = [decode_key(self.encryption_key.get_secret_value())]
        if self.encryption_old_keys is not None:
            keys += [decode_key(k) for k in self.encryption_old_keys.get_secret_value().split(",")]
        return keys


def decode_key(text: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode("ascii") + b"==")
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not urlsafe base64") from None
    if len(key) != 32:
        raise ValueError(f"decodes to {len(key)} bytes, 32 are needed")
    return key


def load_settings(**overrides: object) -> Settings:
    """Build the settings or raise a ConfigError whose message is one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "CT_" + str(error["loc"][0]).upper() if error["loc"] else "CT_*"
        raw = error.get("input")
        shown = "" if "key" in name.lower() or not isinstance(raw, str | int) else f" (got {raw!r})"
        hint = f"; {ENCRYPTION_KEY_HINT}" if "KEY" in name else ""
        raise ConfigError(f"{name} is invalid{shown}: {error['msg']}{hint}") from None
