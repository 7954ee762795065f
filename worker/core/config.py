"""Settings for every `ct` process, read once from `CT_*` environment variables in `main()`."""

from __future__ import annotations

import base64
import binascii
import ssl
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.core.nameservers import parse_resolvers

HostName = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9.\-:\[\]]+$")]
# A DKIM selector is one or more DNS labels (RFC 6376 section 3.1).
Selector = Annotated[
    str,
    Field(
        max_length=63,
        pattern=r"^[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*$",
    ),
]
Port = Annotated[int, Field(ge=1, le=65535)]
ENCRYPTION_KEY_HINT = (
    "set CT_ENCRYPTION_KEY to 32 random bytes in urlsafe base64; make one with `ct keygen`"
)
DKIM_KEY_HINT = "make a key with `ct dkim keygen --selector S --out FILE`"


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line naming the variable."""


class Rejected(ConfigError):
    """A server refused these settings: credentials, a certificate, an ACL, a missing topic.

    Retrying cannot help; an operator must change a setting (or the server's ACLs) first.
    """


class Unreachable(Exception):
    """A server could not be reached or resolved; the message names the setting and what was
    tried, in one line."""


class SettingConflict(ValueError):
    """Settings that cannot work together; `variable` is the one to change."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(message)
        self.variable = variable


KafkaSecurity = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SmtpTls = Literal["none", "starttls", "tls"]
SchemaFraming = Literal["single-object", "confluent"]
# Query options of a MongoDB URI whose values are secrets (AWS session tokens, key passwords).
_SECRET_URI_OPTIONS = {"authmechanismproperties", "tlscertificatekeyfilepassword"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CT_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    kafka_bootstrap: str = Field(default="127.0.0.1:9092", min_length=3)
    kafka_security_protocol: KafkaSecurity = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_file: Path | None = None  # none: the system's trusted CAs
    kafka_ssl_cert_file: Path | None = None
    kafka_ssl_key_file: Path | None = None
    # A secret: it may carry a password (mongodb://user:password@host/?tls=true&tlsCAFile=...).
    mongo_uri: SecretStr = SecretStr("mongodb://127.0.0.1:27017")
    mongo_db: str = Field(default="conversation_tracker", pattern=r"^[A-Za-z0-9_\-]{1,63}$")
    # Unset: detected from the server's buildInfo (see worker/adapters/dialect.py).
    mongo_dialect: Literal["mongodb", "ferretdb"] | None = None
    smtp_host: HostName = "127.0.0.1"
    smtp_port: Port = 1025
    smtp_tls: SmtpTls = "none"  # none: the local sink; starttls: submission on 587; tls: 465
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_ca_file: Path | None = None  # none: the system's trusted CAs
    smtp_tls_verify: bool = True
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
    # Orders whose aliases a worker keeps in memory (0: read MongoDB every time), at least two
    # polls' worth (apps/builder.py); see AliasStore.
    alias_cache_size: int = Field(default=2048, ge=0, le=1_000_000)
    encryption_key: SecretStr | None = None
    encryption_old_keys: SecretStr | None = None
    templates_dir: Path | None = None

    # DKIM (see worker/adapters/dkim_keys.py): the notifier and the relay sign everything they
    # send and refuse to start without a readable 2048-bit RSA key.
    dkim_selector: Selector | None = None
    dkim_private_key_file: Path | None = None
    dkim_ed25519_key_file: Path | None = None
    dkim_ed25519_selector: Selector | None = None
    # A hard bounce suppresses the customer's address for its order; with this, for every order
    # of the same store too.
    bounce_suppress_store: bool = False

    # A schema registry's Confluent-compatible REST API (Apicurio: .../apis/ccompat/v7); needed to
    # read records framed with a registry id, and to write with CT_SCHEMA_FRAMING=confluent.
    schema_registry_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    schema_registry_ca_file: Path | None = None  # none: the system's trusted CAs
    schema_registry_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # How the workers frame the timeline events they write (reading recognises every framing).
    schema_framing: SchemaFraming = "single-object"

    topic_order_status: str = "oms.order-status.v1"
    topic_timeline: str = "ct.timeline.v1"
    topic_dlq: str = "ct.dlq.v1"
    group_notifier: str = "ct-notifier"
    group_projector: str = "ct-projector"
    topic_partitions: int = Field(default=6, ge=1, le=10_000)
    topic_replication: int = Field(default=1, ge=1, le=32)

    batch_max_records: int = Field(default=500, ge=1, le=100_000)
    # Order documents a projector remembers as it wrote them, so that the next batch of the same
    # orders need not read them again (0: read every time). Forgotten on every rebalance.
    projector_cache_size: int = Field(default=4096, ge=0, le=1_000_000)
    # Past this, an order's oldest timeline entries move to the overflow collection (MongoDB
    # refuses documents over 16 MiB, which failed the projector's whole batch).
    projector_max_document_bytes: int = Field(
        default=8 * 1024 * 1024, ge=16 * 1024, le=12 * 1024 * 1024
    )
    notifier_concurrency: int = Field(default=64, ge=1, le=10_000)
    # Emails a notifier may have had accepted upstream but not yet recorded in its ledger: the
    # most a kill can make it send twice. Raising it buys throughput
    # (worker/services/recorded_send.py).
    notifier_max_unrecorded: int = Field(default=1, ge=1, le=1_000)
    retry_max_delay_s: float = Field(default=30.0, gt=0)

    relay_host: HostName = "127.0.0.1"
    relay_port: Port = 2525
    relay_max_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    relay_tls_cert: Path | None = None
    relay_tls_key: Path | None = None
    # "off" trusts From and the envelope as before: only for a relay fed by trusted systems.
    relay_sender_auth: Literal["enforce", "off"] = "enforce"
    # Abuse limits on mail from external senders (anyone not authenticated as the order's
    # customer or store), over a sliding window; per relay process (see docs/operations.md).
    # 0 turns a limit off.
    relay_rate_window_s: int = Field(default=3600, ge=1, le=7 * 86400)
    relay_rate_per_alias: int = Field(default=20, ge=0, le=1_000_000)
    relay_rate_per_domain: int = Field(default=500, ge=0, le=1_000_000)
    relay_rate_per_ip: int = Field(default=500, ge=0, le=1_000_000)
    # Concurrent SMTP sessions, in total and per client IP: one sender cannot take every slot
    # of the relay's loop; beyond either, a new connection gets 421 and is closed.
    relay_max_sessions: int = Field(default=500, ge=1, le=100_000)
    relay_max_sessions_per_ip: int = Field(default=20, ge=1, le=100_000)

    # DNS for sender authentication: comma-separated host:port, unset for the system's resolvers.
    dns_resolvers: str | None = None
    dns_timeout_s: float = Field(default=5.0, gt=0, le=60)
    dns_cache_size: int = Field(default=10_000, ge=1, le=10_000_000)

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
    # Shred the subject key of a person whose every order is older than this (`ct retention
    # run`, and daily in the workers); None (the default): keep subjects until erased.
    subject_retention_days: int | None = Field(default=None, ge=1, le=36500)

    http_host: HostName = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535)  # 0: no HTTP endpoint
    shutdown_grace_s: float = Field(default=15.0, ge=0)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("mongo_uri")
    @classmethod
    def _check_mongo_uri(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("must start with mongodb:// or mongodb+srv://")
        return value

    @field_validator("kafka_ssl_ca_file", "smtp_ca_file", "schema_registry_ca_file")
    @classmethod
    def _check_ca_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            _readable(value)
            try:
                ssl.create_default_context(cafile=str(value))
            except ssl.SSLError:
                raise ValueError(f"{value} holds no PEM certificate") from None
        return value

    @field_validator("kafka_ssl_cert_file", "kafka_ssl_key_file")
    @classmethod
    def _check_pem_file(cls, value: Path | None) -> Path | None:
        if value is not None and b"-----BEGIN " not in _readable(value):
            raise ValueError(f"{value} is not a PEM file")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        _check_kafka_security(self)
        _check_smtp_security(self)
        _check_schema_registry(self)
        return self

    @property
    def kafka_uses_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    @property
    def kafka_uses_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def mongo_uri_shown(self) -> str:
        """CT_MONGO_URI as it may be printed or logged: without its password and secret options."""
        return redact_uri(self.mongo_uri.get_secret_value())

    @field_validator("domain", "dkim_selector", "dkim_ed25519_selector", mode="before")
    @classmethod
    def _lowercase_domain(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("dns_resolvers")
    @classmethod
    def _check_resolvers(cls, value: str | None) -> str | None:
        if value is not None:
            parse_resolvers(value)
        return value

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


def _readable(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None


def _check_kafka_security(s: Settings) -> None:
    _check_kafka_sasl(s)
    _check_kafka_tls(s)


def _check_kafka_sasl(s: Settings) -> None:
    protocol = f"CT_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol}"
    if s.kafka_uses_sasl:
        if s.kafka_sasl_mechanism is None:
            raise SettingConflict(
                "CT_KAFKA_SASL_MECHANISM",
                f"is required with {protocol}: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
            )
        for name, value in (
            ("CT_KAFKA_SASL_USERNAME", s.kafka_sasl_username),
            ("CT_KAFKA_SASL_PASSWORD", s.kafka_sasl_password),
        ):
            if not value:
                raise SettingConflict(
                    name, f"is required with CT_KAFKA_SASL_MECHANISM={s.kafka_sasl_mechanism}"
                )
    else:
        for name, value in (
            ("CT_KAFKA_SASL_MECHANISM", s.kafka_sasl_mechanism),
            ("CT_KAFKA_SASL_USERNAME", s.kafka_sasl_username),
            ("CT_KAFKA_SASL_PASSWORD", s.kafka_sasl_password),
        ):
            if value is not None:
                raise SettingConflict(
                    name, f"is set but {protocol} does not use SASL: use SASL_SSL (or unset it)"
                )


def _check_kafka_tls(s: Settings) -> None:
    protocol = f"CT_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol}"
    if not s.kafka_uses_tls:
        for name, path in (
            ("CT_KAFKA_SSL_CA_FILE", s.kafka_ssl_ca_file),
            ("CT_KAFKA_SSL_CERT_FILE", s.kafka_ssl_cert_file),
            ("CT_KAFKA_SSL_KEY_FILE", s.kafka_ssl_key_file),
        ):
            if path is not None:
                raise SettingConflict(
                    name, f"is set but {protocol} does not use TLS: use SSL or SASL_SSL"
                )
    if (s.kafka_ssl_cert_file is None) != (s.kafka_ssl_key_file is None):
        missing = (
            "CT_KAFKA_SSL_KEY_FILE" if s.kafka_ssl_key_file is None else "CT_KAFKA_SSL_CERT_FILE"
        )
        raise SettingConflict(missing, "is required too: a client certificate needs its key")
    if s.kafka_ssl_cert_file is not None and s.kafka_ssl_key_file is not None:
        try:
            ssl.create_default_context().load_cert_chain(
                str(s.kafka_ssl_cert_file), str(s.kafka_ssl_key_file)
            )
        except ssl.SSLError:
            raise SettingConflict(
                "CT_KAFKA_SSL_KEY_FILE", "is not the private key of CT_KAFKA_SSL_CERT_FILE"
            ) from None


def _check_smtp_security(s: Settings) -> None:
    if (s.smtp_username is None) != (s.smtp_password is None):
        missing = "CT_SMTP_PASSWORD" if s.smtp_password is None else "CT_SMTP_USERNAME"
        raise SettingConflict(missing, "is required too: SMTP AUTH needs a user name and password")
    if s.smtp_tls == "none":
        if s.smtp_username is not None:
            raise SettingConflict(
                "CT_SMTP_TLS",
                "is none but CT_SMTP_USERNAME is set: the password would cross the network in "
                "clear; use starttls (port 587) or tls (port 465)",
            )
        if s.smtp_ca_file is not None:
            raise SettingConflict(
                "CT_SMTP_CA_FILE",
                "is set but CT_SMTP_TLS=none does not use TLS: use starttls or tls",
            )


def _check_schema_registry(s: Settings) -> None:
    if s.schema_framing == "confluent" and s.schema_registry_url is None:
        raise SettingConflict(
            "CT_SCHEMA_REGISTRY_URL", "is required with CT_SCHEMA_FRAMING=confluent"
        )
    if (s.schema_registry_username is None) != (s.schema_registry_password is None):
        missing = (
            "CT_SCHEMA_REGISTRY_PASSWORD"
            if s.schema_registry_password is None
            else "CT_SCHEMA_REGISTRY_USERNAME"
        )
        raise SettingConflict(missing, "is required too: basic auth needs a user name and password")
    url = s.schema_registry_url or ""
    if s.schema_registry_username is not None and not url.startswith("https://"):
        raise SettingConflict(
            "CT_SCHEMA_REGISTRY_URL",
            "must be https:// when CT_SCHEMA_REGISTRY_USERNAME is set: the password would "
            "cross the network in clear",
        )
    if s.schema_registry_ca_file is not None and not url.startswith("https://"):
        raise SettingConflict(
            "CT_SCHEMA_REGISTRY_CA_FILE", "is set but CT_SCHEMA_REGISTRY_URL is not https://"
        )


def redact_uri(uri: str) -> str:
    """A URI without the password of its user part and without secret query options."""
    try:
        parts = urlsplit(uri)
        netloc = parts.netloc
        if "@" in netloc:
            user, hosts = netloc.rsplit("@", 1)
            netloc = f"{user.split(':', 1)[0]}:***@{hosts}" if ":" in user else netloc
        query = urlencode(
            [
                (k, "***" if k.lower() in _SECRET_URI_OPTIONS else v)
                for k, v in parse_qsl(parts.query, keep_blank_values=True)
            ],
            safe="/:,*",
        )
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "<unparseable URI>"


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
        conflict = (error.get("ctx") or {}).get("error")
        if isinstance(conflict, SettingConflict):
            raise ConfigError(f"{conflict.variable} {conflict}") from None
        field = str(error["loc"][0]) if error["loc"] else ""
        name = "CT_" + field.upper() if field else "CT_*"
        raw = error.get("input")
        shown = "" if _is_secret(field) or not isinstance(raw, str | int) else f" (got {raw!r})"
        hint = f"; {ENCRYPTION_KEY_HINT}" if name.startswith("CT_ENCRYPTION") else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{name} is invalid{shown}: {message}{hint}") from None


def _is_secret(field: str) -> bool:
    info = Settings.model_fields.get(field)
    return info is None or "SecretStr" in str(info.annotation)
