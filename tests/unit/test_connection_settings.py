"""TLS, SASL and SMTP AUTH settings: combinations that cannot work are one line naming the
variable; secrets never show; Kafka errors are sorted into retriable and permanent, SMTP ones
into the recipient's, the moment's and ours (a setting to fix)."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiosmtplib
import pytest
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumber,
    RequestTimedOutError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from worker.adapters.kafka import (
    CANCELLED_WORK_WAIT_S,
    is_transient,
    rebalance_timeout_ms,
)
from worker.adapters.kafka_client import bootstrap_hosts, client_options, rejection
from worker.adapters.smtp_client import connection_options, misconfiguration
from worker.core.config import ConfigError, Settings, load_settings, redact_uri

SASL = {
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "ct",
    "kafka_sasl_password": "s3cret-pw",
}


@pytest.fixture(autouse=True)
def _no_ct_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("CT_")]:
        monkeypatch.delenv(name)


def _fails(**overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "CT_KAFKA_SASL_MECHANISM"),
        ({**SASL, "kafka_sasl_username": None}, "CT_KAFKA_SASL_USERNAME"),
        ({**SASL, "kafka_sasl_password": None}, "CT_KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_username": "ct"}, "CT_KAFKA_SASL_USERNAME"),
        ({"kafka_security_protocol": "TLS"}, "CT_KAFKA_SECURITY_PROTOCOL"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "CT_KAFKA_SASL_MECHANISM"),
        ({"kafka_ssl_ca_file": "/nonexistent/ca.pem"}, "CT_KAFKA_SSL_CA_FILE"),
        ({"smtp_tls": "ssl"}, "CT_SMTP_TLS"),
        ({"smtp_username": "ct"}, "CT_SMTP_PASSWORD"),
        ({"smtp_username": "ct", "smtp_password": "pw"}, "CT_SMTP_TLS"),
        ({"smtp_tls_verify": "maybe"}, "CT_SMTP_TLS_VERIFY"),
        ({"schema_framing": "confluent"}, "CT_SCHEMA_REGISTRY_URL"),
        ({"schema_framing": "avro-json"}, "CT_SCHEMA_FRAMING"),
        ({"schema_registry_url": "registry:8081"}, "CT_SCHEMA_REGISTRY_URL"),
        ({"schema_registry_username": "ct"}, "CT_SCHEMA_REGISTRY_PASSWORD"),
        (
            {
                "schema_registry_url": "http://r:8081",
                "schema_registry_username": "ct",
                "schema_registry_password": "pw",
            },
            "CT_SCHEMA_REGISTRY_URL",
        ),
        ({"schema_registry_ca_file": "/nonexistent/ca.pem"}, "CT_SCHEMA_REGISTRY_CA_FILE"),
    ],
)
def test_a_combination_that_cannot_work_names_the_variable(
    overrides: dict[str, object], variable: str
) -> None:
    assert _fails(**overrides).startswith(variable)


def test_ca_files_must_exist_and_hold_pem(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.der"
    not_pem.write_bytes(b"\x30\x82 not a certificate")
    message = _fails(**SASL, kafka_ssl_ca_file=str(not_pem))
    assert message.startswith("CT_KAFKA_SSL_CA_FILE") and "PEM" in message
    assert _fails(smtp_tls="starttls", smtp_ca_file=str(not_pem)).startswith("CT_SMTP_CA_FILE")
    assert _fails(smtp_ca_file=ssl.get_default_verify_paths().openssl_cafile or "/x").startswith(
        "CT_SMTP_CA_FILE"
    )


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    message = _fails(kafka_security_protocol="SSL", kafka_ssl_cert_file=str(cert))
    assert message.startswith("CT_KAFKA_SSL_KEY_FILE")


def test_secrets_never_show_in_errors_or_reprs() -> None:
    message = _fails(**{**SASL, "kafka_sasl_mechanism": "NOPE"})
    assert "s3cret-pw" not in message
    assert _fails(mongo_uri="mysql://root:hunter2@db").startswith("CT_MONGO_URI")
    assert "hunter2" not in _fails(mongo_uri="mysql://root:hunter2@db")
    settings = load_settings(**SASL, mongo_uri="mongodb://u:hunter2@h/?tls=true")
    assert "s3cret-pw" not in repr(settings) and "hunter2" not in repr(settings)
    assert settings.mongo_uri_shown == "mongodb://u:***@h/?tls=true"


def test_uris_are_shown_without_passwords_or_secret_options() -> None:
    uri = "mongodb+srv://app:p%40ss@cluster0.example.mongodb.net/db?retryWrites=true"
    assert (
        redact_uri(uri) == "mongodb+srv://app:***@cluster0.example.mongodb.net/db?retryWrites=true"
    )
    token = "mongodb://h1,h2/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:x"
    assert "AWS_SESSION_TOKEN" not in redact_uri(token) and "h1,h2" in redact_uri(token)
    assert redact_uri("mongodb://h:27017/") == "mongodb://h:27017/"


def test_client_options_carry_tls_and_sasl_for_every_client() -> None:
    options = client_options(load_settings(**SASL, kafka_bootstrap="b1:9192,b2:9192"))
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_password"] == "s3cret-pw"
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert "ssl_context" not in client_options(load_settings())
    assert bootstrap_hosts("b1:9192, [::1]:9093,b3") == [("b1", 9192), ("::1", 9093), ("b3", 9092)]


@pytest.mark.parametrize(
    "error",
    [KafkaConnectionError(), RequestTimedOutError(), KafkaTimeoutError(),
     NotLeaderForPartitionError(), ConnectionResetError(), TimeoutError()],
)  # fmt: skip
def test_outages_and_timeouts_are_retried(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [SaslAuthenticationFailed(), TopicAuthorizationFailedError(), GroupAuthorizationFailedError(),
     ClusterAuthorizationFailedError(), UnknownTopicOrPartitionError(), MessageSizeTooLargeError(),
     OutOfOrderSequenceNumber(), ssl.SSLCertVerificationError(), ValueError("a bug")],
)  # fmt: skip
def test_credentials_acls_missing_topics_and_bugs_are_not_retried(error: BaseException) -> None:
    assert not is_transient(error)


@pytest.mark.parametrize("grace_s", [0.0, 2.0, 15.0, 120.0])
def test_the_group_waits_in_a_rebalance_longer_than_a_member_takes_to_give_its_batches_up(
    grace_s: float,
) -> None:
    """A member gives its batches the grace, then their cancellation up to 5 s (batch_consumer.py);
    evicted before it rejoins, it would send beside the partitions' next owner."""
    settings = load_settings(shutdown_grace_s=grace_s)
    wind_down_s = grace_s + min(grace_s, CANCELLED_WORK_WAIT_S)
    # And 10 s more at least for the commit of what finished and the rejoin itself.
    assert rebalance_timeout_ms(settings) >= 1000 * (wind_down_s + 10)


def test_a_permanent_error_names_what_to_fix() -> None:
    settings = load_settings(**SASL)
    denied = rejection(TopicAuthorizationFailedError(), settings, user_of="topic t-1")
    assert denied is not None and "user ct" in str(denied) and "topic t-1" in str(denied)
    group = rejection(GroupAuthorizationFailedError(), settings, user_of="consumer group g")
    assert group is not None and "CT_GROUP_*" in str(group)
    password = rejection(SaslAuthenticationFailed(), settings, user_of="x")
    assert password is not None and "CT_KAFKA_SASL_PASSWORD" in str(password)
    assert "s3cret-pw" not in str(password)
    missing = rejection(UnknownTopicOrPartitionError(), settings, user_of="topic t-2")
    assert missing is not None and "ct topics create" in str(missing)
    assert rejection(KafkaConnectionError(), settings, user_of="x") is None


def _starttls(**overrides: object) -> Settings:
    wanted = {"smtp_tls": "starttls", "smtp_username": "ct", "smtp_password": "smtp-pw"}
    return load_settings(**(wanted | overrides))


def test_smtp_starttls_is_required_never_opportunistic() -> None:
    options = connection_options(_starttls())
    assert options["start_tls"] is True and options["use_tls"] is False
    assert options["tls_context"].verify_mode == ssl.CERT_REQUIRED
    implicit = connection_options(_starttls(smtp_tls="tls"))
    assert implicit["use_tls"] is True and implicit["start_tls"] is False
    plain = connection_options(load_settings())
    assert plain["start_tls"] is False and plain["tls_context"] is None
    unverified = connection_options(_starttls(smtp_tls_verify=False))["tls_context"]
    assert unverified.verify_mode == ssl.CERT_NONE and not unverified.check_hostname


AUTH_FAILED = aiosmtplib.SMTPAuthenticationError(535, "5.7.8 Authentication failed")
AUTH_NEEDED = aiosmtplib.SMTPSenderRefused(530, "5.7.0 Authentication required", "a@b")
NO_STARTTLS = aiosmtplib.SMTPException("SMTP STARTTLS extension not supported by server.")


@pytest.mark.parametrize(
    ("error", "names"),
    [
        (AUTH_FAILED, "CT_SMTP_PASSWORD"),
        (AUTH_NEEDED, "CT_SMTP_PASSWORD"),
        (NO_STARTTLS, "CT_SMTP_TLS=starttls"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "CT_SMTP_CA_FILE"),
    ],
)
def test_smtp_refusals_that_a_setting_fixes_name_it(error: Exception, names: str) -> None:
    problem = misconfiguration(error, _starttls())
    assert problem is not None and names in str(problem) and "smtp-pw" not in str(problem)


def test_smtp_refusals_of_one_recipient_or_transient_ones_are_not_misconfiguration() -> None:
    settings = _starttls()
    assert (
        misconfiguration(aiosmtplib.SMTPResponseException(550, "5.1.1 no such user"), settings)
        is None
    )
    assert (
        misconfiguration(aiosmtplib.SMTPResponseException(451, "4.3.0 try later"), settings) is None
    )
    assert misconfiguration(aiosmtplib.SMTPServerDisconnected("gone"), settings) is None
    assert misconfiguration(ConnectionRefusedError(), settings) is None
    plain = load_settings()
    asks_tls = aiosmtplib.SMTPResponseException(530, "5.7.0 Must issue a STARTTLS command first")
    problem = misconfiguration(asks_tls, plain)
    assert problem is not None and "set CT_SMTP_TLS=starttls" in str(problem)


def test_turning_certificate_checks_off_is_logged_at_start() -> None:
    from structlog.testing import capture_logs

    from worker.adapters.smtp import SmtpPool

    with capture_logs() as logs:
        SmtpPool.from_settings(_starttls(smtp_tls_verify=False))
        SmtpPool.from_settings(_starttls())
    assert [line["event"] for line in logs] == ["smtp_tls_unverified"]
    assert logs[0]["log_level"] == "warning" and "CT_SMTP_TLS_VERIFY=false" in logs[0]["detail"]
