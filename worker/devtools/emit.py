"""Order-status events made by hand: `ct emit` and the sample data of `ct preview`."""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime

from pydantic import ValidationError

from worker.contracts.events import Customer, Item, OrderStatus, OrderStatusChanged, Store


class EmitError(ValueError):
    """An option that cannot make a valid event; the message says which and why."""


def _items(specs: list[str]) -> list[Item] | None:
    items = []
    for spec in specs:
        quantity, sep, name = spec.partition("x")
        if not sep or not quantity.isdigit() or not name:
            raise EmitError(f"--item {spec!r}: expected QTYxNAME, e.g. 2xSocks")
        items.append(Item(name=name, quantity=int(quantity)))
    return items or None


def event_from_args(args: argparse.Namespace) -> OrderStatusChanged:
    first, _, last = args.customer_name.partition(" ")
    try:
        return OrderStatusChanged(
            event_id=args.event_id or str(uuid.uuid4()),
            order_id=args.order,
            store_id=args.store,
            occurred_at=datetime.now(UTC),
            status=OrderStatus(args.status),
            customer=Customer(
                email=args.customer_email,
                first_name=first,
                last_name=last,
                locale=args.customer_locale,
            ),
            store=Store(name=args.store_name, email=args.store_email, locale=args.store_locale),
            total_value=args.total,
            currency=args.currency,
            invoice_number=args.invoice_number,
            invoice_url=args.invoice_url,
            tracking_carrier=args.carrier,
            tracking_code=args.tracking_code,
            tracking_url=args.tracking_url,
            items=_items(args.item),
        )
    except ValidationError as exc:
        error = exc.errors(include_input=False, include_url=False)[0]
        field = ".".join(str(p) for p in error["loc"])
        raise EmitError(f"{field}: {error['msg']}") from None


def sample_event(status: str, locale: str, store_id: str) -> OrderStatusChanged:
    """A plausible order for previewing a template; every optional field filled in."""
    return OrderStatusChanged(
        event_id="preview",
        order_id="ORD-1001",
        store_id=store_id,
        occurred_at=datetime.now(UTC),
        status=OrderStatus(status),
        customer=Customer(
            email="jane@example.org", first_name="Jane", last_name="Doe", locale=locale
        ),
        store=Store(name="Example Store", email="orders@store.example.com", locale=locale),
        total_value=15990,
        currency="BRL" if locale.lower().startswith("pt") else "USD",
        invoice_number="NF-2026-0042",
        invoice_url="https://store.example.com/invoices/0042",
        tracking_carrier="Correios",
        tracking_code="BR123456789XX",
        tracking_url="https://track.example.com/BR123456789XX",
        items=[Item(name="Coffee mug", quantity=2), Item(name="Espresso beans 1kg", quantity=1)],
    )
