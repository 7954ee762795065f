"""Settings fail with one line naming the variable; logs never carry a real address."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
import structlog

from tests.conftest import REPO
from worker.core.config import ConfigError, load_settings
from worker.core.crypto import generate_key
from worker.core.logging import AddressRedactor, configure_logging


def test_defaults_are_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("CT_")]:
        monkeypatch.delenv(name)
    settings = load_settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.mongo_uri.get_secret_value() == "mongodb://127.0.0.1:27017"
    assert (settings.smtp_host, settings.smtp_port) == ("127.0.0.1", 1025)
    assert settings.domain == "ct.example.com"
    assert settings.alias_ttl_days == 60


@pytest.mark.parametrize(
    ("env", "value", "names"),
    [
        ("CT_SMTP_PORT", "70000", "CT_SMTP_PORT"),
        ("CT_SMTP_PORT", "smtp", "CT_SMTP_PORT"),
        ("CT_DOMAIN", "not a domain", "CT_DOMAIN"),
        ("CT_MONGO_URI", "postgres://x", "CT_MONGO_URI"),
        ("CT_ALIAS_TTL_DAYS", "0", "CT_ALIAS_TTL_DAYS"),
        ("CT_ENCRYPTION_KEY", "too-short", "CT_ENCRYPTION_KEY"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, names: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(names) and "\n" not in message
    if "KEY" in env:
        assert value not in message and "ct keygen" in message


def test_workers_need_a_key_and_say_how_to_make_one() -> None:
    with pytest.raises(ConfigError, match="ct keygen"):
        load_settings().data_keys()
    key = generate_key()
    assert load_settings(encryption_key=key).data_keys()[0] == __import__(
        "base64"
    ).urlsafe_b64decode(key + "==")


def test_the_cli_reports_a_bad_setting_and_a_bad_argument_in_one_line() -> None:
    ct = str(REPO / ".venv/bin/ct")
    bad_env = subprocess.run(
        [ct, "topics", "create"], capture_output=True, text=True, timeout=60,
        env={"CT_SMTP_PORT": "nope", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert (
        bad_env.returncode == 2
        and bad_env.stderr.count("\n") == 1
        and "CT_SMTP_PORT" in bad_env.stderr
    )
    bad_arg = subprocess.run([ct, "preview", "SENT"], capture_output=True, text=True, timeout=60)
    assert (
        bad_arg.returncode == 2
        and bad_arg.stderr.count("\n") == 1
        and "invalid choice" in bad_arg.stderr
    )


def test_the_redactor_masks_real_and_soft_addresses_but_keeps_hard_aliases() -> None:
    redact = AddressRedactor("ct.example.com")
    event = redact(
        None,
        "info",
        {
            "event": "sent to john.doe@example.com",
            "soft": "john.doe@example.com-207700027841b.ct.example.com",
            "alias": "ff2e6348a53a4d449af92be2a1011328@ct.example.com",
            "nested": {"list": ["a@b.org", 3], "exc": ValueError("bad x@y.io")},
        },
    )
    assert event["event"] == "sent to <redacted-address>"
    assert event["soft"] == "<redacted-address>"
    assert event["alias"] == "ff2e6348a53a4d449af92be2a1011328@ct.example.com"
    assert event["nested"] == {"list": ["<redacted-address>", 3], "exc": "bad <redacted-address>"}


def test_json_logs_in_production_carry_no_address(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("info", "json", "ct.example.com")
    try:
        structlog.get_logger("t").info(
            "event_processed", customer="jane@example.org", order_id="o-1"
        )
        line = json.loads(stream.getvalue().strip().splitlines()[-1])
        assert line["customer"] == "<redacted-address>" and line["order_id"] == "o-1"
        assert line["level"] == "info" and "timestamp" in line
    finally:
        structlog.reset_defaults()


def test_a_broken_idempotent_producer_is_not_retried_but_a_broker_outage_is() -> None:
    from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber, RequestTimedOutError

    from worker.adapters.kafka import is_transient

    assert is_transient(KafkaConnectionError()) and is_transient(RequestTimedOutError())
    assert not is_transient(OutOfOrderSequenceNumber())
    assert not is_transient(ValueError("a bug"))


@pytest.mark.parametrize(
    ("value", "fix"),
    [
        ("dns.example:53", "not an IP address"),
        ("127.0.0.1:99999", "no valid port"),
        ("127.0.0.1:53,,[::1]:x", "no valid port"),
    ],
)
def test_a_bad_dns_resolver_list_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, fix: str
) -> None:
    monkeypatch.setenv("CT_DNS_RESOLVERS", value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert str(error.value).startswith("CT_DNS_RESOLVERS is invalid") and fix in str(error.value)
    assert "\n" not in str(error.value)


def test_dns_resolvers_take_host_port_pairs_and_default_to_the_system() -> None:
    from worker.adapters.dns import Nameserver, parse_resolvers

    assert load_settings().dns_resolvers is None
    assert parse_resolvers("127.0.0.1:5353, [::1]:53 ,10.0.0.2") == (
        Nameserver("127.0.0.1", 5353), Nameserver("::1", 53), Nameserver("10.0.0.2", 53),
    )  # fmt: skip
    assert load_settings().relay_sender_auth == "enforce"
