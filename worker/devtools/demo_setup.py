"""The demo's cast and set-up: its stores, customers and carrier, the events it emits, its keys
and the workers' environment, kept beside the stack's data so that `make console` reads the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from worker.adapters.dkim_keys import generate_key as generate_dkim_key
from worker.adapters.dkim_keys import write_key
from worker.contracts.events import Customer, Item, OrderStatus, OrderStatusChanged, Store
from worker.core.config import Settings
from worker.core.crypto import generate_key
from worker.domain.aliases import MaskType

JOURNEY = [
    OrderStatus.PAYMENT_APPROVED,
    OrderStatus.HANDLING,
    OrderStatus.INVOICED,
    OrderStatus.SHIPPED,
    OrderStatus.DELIVERED,
]

STORES = [
    ("aurora", "Aurora Coffee Co.", "orders@aurora-coffee.example", MaskType.HARD, "en", "USD"),
    ("bazar", "Bazar da Vila", "vendas@bazardavila.example", MaskType.SOFT, "pt-BR", "BRL"),
]

CUSTOMERS = [
    ("Jane", "Doe", "jane.doe@example.org"),
    ("Rafael", "Souza", "rafael.souza@example.net"),
]

CARRIER = ("Speedy Carrier", "tracking@speedy-carrier.example")

DEMO_HTTP_PORT = 9464

DEMO_DNS = f"127.0.0.1:{os.environ.get('CT_STACK_DNS_PORT', '5353')}"

STEP_TIMEOUT_S = 60.0


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def state_dir() -> Path:
    default = Path.home() / ".local" / "state" / "conversation-tracker"
    return Path(os.environ.get("CT_STATE_DIR", str(default)))


def demo_key(settings: Settings) -> str:
    """The settings' key, else one kept beside the stack's data so re-runs can read old aliases."""
    if settings.encryption_key is not None:
        return settings.encryption_key.get_secret_value()
    path = state_dir() / "demo-encryption.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generate_key() + "\n", encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


def demo_dkim(settings: Settings) -> dict[str, str]:
    """The settings' DKIM key, else one kept beside the stack's data: the workers sign with it."""
    if settings.dkim_selector and settings.dkim_private_key_file:
        return {}  # the workers read CT_DKIM_* from the environment as they are
    path = state_dir() / "demo-dkim.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_key(generate_dkim_key("rsa"), path, overwrite=False)
    return {"CT_DKIM_SELECTOR": "demo", "CT_DKIM_PRIVATE_KEY_FILE": str(path)}


async def wait_for(
    check: Callable[[], Awaitable[Any]], what: str, within: float = STEP_TIMEOUT_S
) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.25)


def order_event(
    run: str, store: tuple[Any, ...], n: int, status: OrderStatus, at: datetime
) -> OrderStatusChanged:
    store_id, name, email, _, locale, currency = store
    first, last, customer_email = CUSTOMERS[n % len(CUSTOMERS)]
    local, domain = customer_email.split("@")
    order_id = f"{store_id.upper()}-{run}-{n + 1}"
    extras: dict[str, Any] = {}
    if status in (OrderStatus.INVOICED, OrderStatus.SHIPPED, OrderStatus.DELIVERED):
        extras |= {
            "invoice_number": f"NF-{run}-{n + 1}",
            "invoice_url": f"https://{email.split('@')[1]}/nf/{order_id}",
        }
    if status in (OrderStatus.SHIPPED, OrderStatus.DELIVERED):
        code = f"SC{run.upper()}{n + 1}BR"
        extras |= {
            "tracking_carrier": CARRIER[0],
            "tracking_code": code,
            "tracking_url": f"https://track.speedy-carrier.example/{code}",
        }
    return OrderStatusChanged(
        event_id=f"{order_id}-{status.value}",
        order_id=order_id,
        store_id=store_id,
        occurred_at=at,
        status=status,
        customer=Customer(
            email=f"{local}+{run}-{n + 1}@{domain}", first_name=first, last_name=last, locale=locale
        ),
        store=Store(name=name, email=email, locale=locale),
        total_value=4990 + 1500 * n,
        currency=currency,
        items=[
            Item(name="Single-origin beans 250 g", quantity=2),
            Item(name="Ceramic mug", quantity=1),
        ],
        **extras,
    )


def worker_env(settings: Settings, key: str, http_port: int) -> dict[str, str]:
    return {
        # The stack's dnsmasq publishes the demo senders' SPF and DMARC records: the relay
        # authenticates every sender as it would on the internet.
        "CT_RELAY_SENDER_AUTH": "enforce",
        "CT_DNS_RESOLVERS": DEMO_DNS,
        **os.environ,
        "CT_ENCRYPTION_KEY": key,
        **demo_dkim(settings),
        "CT_HTTP_PORT": str(http_port),
        "CT_LOG_FORMAT": "json",
    }


async def dns_answers(resolver: str) -> bool:
    host, _, port = resolver.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
    except (OSError, TimeoutError):
        say(f"error: no DNS server on {resolver}: start the stack's, deploy/local/stack up dns")
        return False
    writer.close()
    return True


async def workers_ready(port: int) -> bool:
    with contextlib.suppress(OSError):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /readyz HTTP/1.0\r\n\r\n")
        status = await reader.readline()
        writer.close()
        return b" 200 " in status
    return False
