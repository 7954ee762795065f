"""tests/interop/jvm: an OMS's JVM producer and a timeline consumer with Apicurio's Avro serde.

Built once with Maven (Maven Central only) into the stack's cache, keyed to its sources' hash,
like the stack's own builds; a build that fails raises with Maven's output, it never skips.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

from fastavro import json_writer, parse_schema

from tests.support.bus import REPO
from worker.contracts.events import OrderStatusChanged

SOURCE = REPO / "tests" / "interop" / "jvm"
SETTINGS_XML = REPO / "deploy" / "local" / "registry" / "settings.xml"


def _cache() -> Path:
    return Path(os.environ.get("CT_CACHE_DIR", Path.home() / ".cache" / "conversation-tracker"))


def _digest() -> str:
    files = sorted(p for p in SOURCE.rglob("*") if p.is_file() and "target" not in p.parts)
    h = hashlib.sha256()
    for path in files:
        h.update(str(path.relative_to(SOURCE)).encode() + path.read_bytes())
    return h.hexdigest()[:12]


def build() -> Path:
    """The built program's directory (classes/ and lib/), built now if it is not yet."""
    home = _cache() / f"interop-jvm-{_digest()}"
    if (home / ".complete").is_file():
        return home
    work = home.with_suffix(".build")
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(SOURCE, work, ignore=shutil.ignore_patterns("target"))
    command = ["mvn", "-B", "-q", "-T1", "-s", str(SETTINGS_XML),
               f"-Dmaven.repo.local={_cache() / 'm2'}", "-DskipTests", "-Dstyle.color=never",
               "package", "dependency:copy-dependencies", "-DincludeScope=runtime",
               "-DoutputDirectory=target/lib"]  # fmt: skip
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"building tests/interop/jvm failed:\n{result.stdout[-3000:]}")
    home.mkdir(parents=True)
    shutil.move(work / "target" / "classes", home / "classes")
    shutil.move(work / "target" / "lib", home / "lib")
    shutil.rmtree(work)
    (home / ".complete").touch()
    return home


def run(home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    classpath = f"{home / 'classes'}:{home / 'lib'}/*"
    return subprocess.run(
        ["java", "-Xmx256m", "-cp", classpath, "dev.conversationtracker.interop.OmsInterop", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def avro_json_lines(schema_file: Path, events: list[OrderStatusChanged]) -> str:
    """The events in Avro's JSON encoding (what Avro's Java JsonDecoder reads), one a line."""
    schema = parse_schema(json.loads(schema_file.read_text()))
    out = io.StringIO()
    for event in events:
        json_writer(out, schema, [event.to_record()])
        out.write("\n")
    return out.getvalue()
