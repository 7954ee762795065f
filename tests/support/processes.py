"""`ct` as a subprocess, what it printed, and a check that no secret is among it."""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CT = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "ct")


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str
    seconds: float

    def errors(self) -> list[dict[str, Any]]:
        """The JSON log lines at level error."""
        lines = [json.loads(x) for x in self.stderr.splitlines() if x.startswith("{")]
        return [line for line in lines if line.get("level") == "error"]


async def ct(env: dict[str, str], *args: str, timeout: float = 90) -> Finished:
    started = time.monotonic()
    result = await asyncio.to_thread(
        subprocess.run, [CT, *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    return Finished(result.returncode, result.stdout, result.stderr, time.monotonic() - started)


def assert_no_secret(secrets: list[str], *texts: str) -> None:
    for secret in secrets:
        assert all(secret not in text for text in texts), "a secret was printed"


def untrusted_ca(directory: Path) -> Path:
    """A CA of its own, which signed nothing of the stack's."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Someone else's CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / "other-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path
