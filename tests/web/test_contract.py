"""The API keeps its own contract: Schemathesis, every check, against the live console.

A console of its own, on a database of its own (the generated requests write store settings
and replay dead letters at random), with a platform admin's token, so every route is reached.
The run is bounded by examples per operation (about a minute here); its seed is printed, and
a failure shows the request that reproduces it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.web.conftest import TESTS
from worker.adapters import mongo
from worker.adapters.kafka import ensure_topics
from worker.apps.web import WebService, build_accounts
from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.domain.accounts import Role
from worker.domain.aliases import SystemClock

pytestmark = [pytest.mark.stack, pytest.mark.slow]
EXAMPLES_PER_OPERATION = 30


@pytest.fixture
async def empty_console(web_settings: Settings) -> AsyncIterator[tuple[str, str]]:
    run = uuid.uuid4().hex[:8]
    settings = web_settings.model_copy(
        update={
            "mongo_db": f"ct_contract_{run}",
            "topic_dlq": f"contract-{run}-dlq",
            "topic_order_status": f"contract-{run}-orders",
            "topic_timeline": f"contract-{run}-timeline",
            "web_port": 0,
        }
    )
    await ensure_topics(settings, 1, 1)
    client = mongo.connect(settings, app_name="ct-contract-tests")
    accounts = build_accounts(client[settings.mongo_db], settings, SystemClock())
    await accounts.add_user("contract", Role.ADMIN, None, by=TESTS)
    token, _ = await accounts.create_token("contract", "schemathesis", by=TESTS)
    service = WebService(settings, AddressCipher(settings.data_keys()))
    stopping = asyncio.Event()
    task = asyncio.create_task(service.run(stopping))
    try:
        async with asyncio.timeout(30):
            while not service.is_ready():
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{service.port}", token.value
    finally:
        stopping.set()
        async with asyncio.timeout(30):
            await task
        await client.drop_database(settings.mongo_db)
        await client.close()


async def test_schemathesis_finds_nothing_the_document_does_not_say(
    empty_console: tuple[str, str], tmp_path: Path
) -> None:
    url, token = empty_console
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=auth) as client:
        schema = (await client.get("/api/openapi.json")).raise_for_status().json()
    (tmp_path / "openapi.json").write_text(json.dumps(schema))
    command = [
        str(Path(sys.executable).with_name("st")), "run", str(tmp_path / "openapi.json"),
        "--url", url, "--header", f"Authorization: Bearer {token}", "--checks", "all",
        "--max-examples", str(EXAMPLES_PER_OPERATION), "--workers", "2",
        "--generation-database", "none", "--no-color", "--request-timeout", "30",
        "--suppress-health-check", "all",
    ]  # fmt: skip
    run = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    output = run.stdout + run.stderr
    summary = output[output.rfind("Test cases:") :]
    print(f"\nschemathesis: {' '.join(summary.split())}")  # the run's counts and seed (-s)
    assert run.returncode == 0, output[-12000:]
    assert "No issues found" in output or "passed" in output, output[-3000:]
