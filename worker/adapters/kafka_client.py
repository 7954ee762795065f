"""How every Kafka client connects (TLS, SASL), and what a failure to connect means.

aiokafka's bootstrap logs each broker's failure and raises one KafkaConnectionError("Unable to
bootstrap from ...") whatever the cause: a wrong password, an untrusted certificate and a broker
that is down look alike. `diagnose` connects to each bootstrap server once more, the same way,
with aiokafka's own connection, and turns the real cause into one line naming the setting to fix.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    KafkaUnavailableError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnknownTopicOrPartitionError,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from worker.adapters.tls import verify_reason
from worker.core.config import Rejected, Settings, Unreachable

PROBE_TIMEOUT_S = 10.0
AUTHENTICATION_ERRORS = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
)
AUTHORIZATION_ERRORS = (
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
# Errors that no retry can cure: the settings, the ACLs or the data must change first.
PERMANENT_ERRORS = (
    *AUTHENTICATION_ERRORS,
    *AUTHORIZATION_ERRORS,
    UnknownTopicOrPartitionError,  # retriable to Kafka (metadata lags); we create topics first
    MessageSizeTooLargeError,
    RecordTooLargeError,
)


_GRANT: dict[type[Exception], str] = {
    TopicAuthorizationFailedError: "grant it Read, Write and Describe on the topic (an ACL; a "
    "prefixed one fits the project's names), or fix the name in its CT_TOPIC_* setting",
    GroupAuthorizationFailedError: "grant it Read on the consumer group (an ACL), or fix the "
    "name in its CT_GROUP_* setting",
    ClusterAuthorizationFailedError: "an idempotent producer needs Write on a topic it produces "
    "to, or IdempotentWrite on the cluster: grant one (an ACL)",
}


def client_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments that every aiokafka client (producer, consumer, admin) takes."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_uses_tls:
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_ca_file,
            certfile=settings.kafka_ssl_cert_file,
            keyfile=settings.kafka_ssl_key_file,
        )
    if settings.kafka_uses_sasl and settings.kafka_sasl_password is not None:  # both, or neither
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
        }
    return options


async def start_client(client: Any, settings: Settings, *, using: str) -> None:
    """Start an aiokafka client. Failing to bootstrap, or a permanent refusal (credentials, ACLs),
    raises Rejected or Unreachable: one line naming the setting or ACL to fix, instead of
    aiokafka's "Unable to bootstrap". `using` names what the client was after, for the ACL."""
    try:
        await client.start()
    except KafkaConnectionError as exc:
        raise await diagnose(settings, exc) from None
    except PERMANENT_ERRORS as exc:
        raise (rejection(exc, settings, user_of=using) or exc) from None


class Producer(AIOKafkaProducer):  # type: ignore[misc]  # aiokafka has no type information
    """aiokafka's producer, connected as the settings say, whose start() fails in one line."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        super().__init__(**client_options(settings), **options)
        self._settings = settings

    async def start(self) -> None:
        # An idempotent producer needs IdempotentWrite on the cluster, or Write on some topic.
        await start_client(super(), self._settings, using="an idempotent producer")


class Consumer(AIOKafkaConsumer):  # type: ignore[misc]
    """aiokafka's consumer, connected as the settings say, whose start() fails in one line."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        super().__init__(**client_options(settings), **options)
        self._settings = settings

    async def start(self) -> None:
        await start_client(super(), self._settings, using="a consumer")


@asynccontextmanager
async def admin_client(
    settings: Settings, client_id: str, **options: Any
) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(client_id=client_id, **client_options(settings), **options)
    try:
        await start_client(admin, settings, using="the admin API")
        yield admin
    finally:
        await admin.close()


def is_retriable(exc: BaseException) -> bool:
    """Kafka's own verdict (aiokafka marks retriable errors), plus timeouts and lost connections."""
    if isinstance(exc, PERMANENT_ERRORS):
        return False
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError | KafkaUnavailableError)
    if isinstance(exc, ssl.SSLError):  # an OSError, but a certificate does not fix itself
        return False
    return isinstance(exc, OSError | TimeoutError)


def rejection(exc: BaseException, settings: Settings, *, user_of: str) -> Rejected | None:
    """A permanent error as one line naming what to fix; None for anything else.

    `user_of` names what was being used ("topic ct.timeline.v1", "consumer group ct-notifier").
    """
    who = principal(settings)
    if isinstance(exc, AUTHENTICATION_ERRORS):
        return _authentication_rejected(settings, settings.kafka_bootstrap, exc)
    if isinstance(exc, AUTHORIZATION_ERRORS):
        return Rejected(
            f"Kafka does not allow {who} to use {user_of} ({type(exc).__name__}): "
            f"{_GRANT.get(type(exc), _GRANT[TopicAuthorizationFailedError])}"
        )
    if isinstance(exc, UnknownTopicOrPartitionError):
        return Rejected(
            f"{user_of} does not exist on Kafka at CT_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}: "
            "create it with `ct topics create`, or fix the name in its CT_TOPIC_* setting"
        )
    if isinstance(exc, MessageSizeTooLargeError | RecordTooLargeError):
        return Rejected(
            f"a record for {user_of} is larger than Kafka accepts ({type(exc).__name__}): raise "
            "the topic's max.message.bytes and the broker's message.max.bytes"
        )
    return None


async def diagnose(settings: Settings, error: BaseException) -> Rejected | Unreachable:
    """Why a client could not bootstrap: each server is tried again and the cause named."""
    tried = []
    for host, port in bootstrap_hosts(settings.kafka_bootstrap):
        where = f"{host}:{port}"
        try:
            conn = await asyncio.wait_for(
                create_conn(host, port, request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
                            **_connection_options(settings)),
                PROBE_TIMEOUT_S,
            )  # fmt: skip
        except socket.gaierror as exc:
            tried.append(f"{where}: the name does not resolve ({exc.strerror})")
        except ssl.SSLCertVerificationError as exc:
            return Rejected(
                f"Kafka's TLS certificate at {where} is not trusted ({verify_reason(exc)}): set "
                "CT_KAFKA_SSL_CA_FILE to the CA that signed it (now "
                f"{settings.kafka_ssl_ca_file or 'the system CAs'}), or fix CT_KAFKA_BOOTSTRAP"
            )
        except ssl.SSLError as exc:
            return Rejected(
                f"the TLS handshake with Kafka at {where} failed ({exc.reason or exc}): does "
                f"CT_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} match that "
                "listener, and does it want a client certificate (CT_KAFKA_SSL_CERT_FILE)?"
            )
        except AUTHENTICATION_ERRORS as exc:
            return _authentication_rejected(settings, where, exc)
        except (OSError, TimeoutError) as exc:
            tried.append(f"{where}: {_os_reason(exc)}")
        except KafkaError as exc:
            tried.append(f"{where}: {exc}{_protocol_hint(settings)}")
        else:
            conn.close()
            tried.append(f"{where}: answers now (try again)")
    if not tried:
        tried.append(f"no host:port in it ({type(error).__name__})")
    return Unreachable(
        f"cannot reach Kafka at CT_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} "
        f"({settings.kafka_security_protocol}): " + "; ".join(tried)
    )


def bootstrap_hosts(bootstrap: str) -> list[tuple[str, int]]:
    hosts = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host:
            host, port = port, "9092"
        try:
            hosts.append((host.strip("[]"), int(port)))
        except ValueError:
            continue
    return hosts


def _connection_options(settings: Settings) -> dict[str, Any]:
    options = client_options(settings)
    del options["bootstrap_servers"]
    return options


def principal(settings: Settings) -> str:
    if settings.kafka_uses_sasl:
        return f"user {settings.kafka_sasl_username} (CT_KAFKA_SASL_USERNAME)"
    if settings.kafka_ssl_cert_file is not None:
        return f"the client certificate in CT_KAFKA_SSL_CERT_FILE={settings.kafka_ssl_cert_file}"
    return "this client"


def _authentication_rejected(settings: Settings, where: str, exc: BaseException) -> Rejected:
    if isinstance(exc, UnsupportedSaslMechanismError | AuthenticationMethodNotSupported):
        return Rejected(
            f"Kafka at {where} does not offer CT_KAFKA_SASL_MECHANISM="
            f"{settings.kafka_sasl_mechanism} ({exc}): use a mechanism the listener enables"
        )
    return Rejected(
        f"Kafka at {where} rejected the credentials of CT_KAFKA_SASL_USERNAME="
        f"{settings.kafka_sasl_username} ({settings.kafka_sasl_mechanism}): fix "
        "CT_KAFKA_SASL_PASSWORD (or the user name, or CT_KAFKA_SASL_MECHANISM)"
    )


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {PROBE_TIMEOUT_S:.0f}s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _protocol_hint(settings: Settings) -> str:
    """A listener that closes the connection at once often speaks another protocol."""
    return (
        f" (is CT_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} what this listener "
        "speaks? a mutual-TLS listener also closes on a missing CT_KAFKA_SSL_CERT_FILE)"
    )
