"""Rendering notification emails: every status in every locale, escaping, overrides, bad data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from worker.contracts.events import OrderStatus, OrderStatusChanged
from worker.domain.templates import (
    PACKAGED_TEMPLATES,
    SUPPORTED_LOCALES,
    TemplateDataMissing,
    TemplateRenderer,
    UnsupportedStatus,
    choose_locale,
    is_safe_store_id,
)

STATUSES = [s for s in OrderStatus if s is not OrderStatus.UNKNOWN]
PARTS = ("subject.txt", "txt", "html")


def make_event(status: OrderStatus = OrderStatus.SHIPPED, **changes: Any) -> OrderStatusChanged:
    fields: dict[str, Any] = {
        "eventId": "evt-1",
        "orderId": "ORD-1001",
        "storeId": "store-1",
        "occurredAt": datetime(2025, 1, 5, 14, 30, tzinfo=UTC),
        "status": status,
        "customer": {
            "email": "johndoe@example.com",
            "firstName": "John",
            "lastName": "Doe",
            "locale": "en",
        },
        "store": {"name": "Acme Shop", "email": "shop@acme.test", "locale": None},
        "totalValue": 123456,
        "currency": "USD",
        "invoiceNumber": "NF-000777",
        "invoiceUrl": "https://acme.test/invoices/777",
        "trackingCarrier": "Correios",
        "trackingCode": "BR123456789XX",
        "trackingUrl": "https://track.test/BR123456789XX",
        "items": [{"name": "Coffee mug", "quantity": 2}, {"name": "T-shirt", "quantity": 1}],
    }
    fields.update(changes)
    return OrderStatusChanged.model_validate(fields)


def customer(locale: str | None, first_name: str = "John") -> dict[str, Any]:
    return {"email": "j@example.com", "firstName": first_name, "lastName": "Doe", "locale": locale}


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer()


def test_every_status_has_all_parts_in_every_locale() -> None:
    for locale in SUPPORTED_LOCALES:
        for status in STATUSES:
            for part in PARTS:
                assert (PACKAGED_TEMPLATES / locale / f"{status.lower()}.{part}").is_file()


@pytest.mark.parametrize("status", STATUSES)
def test_english_email_shows_the_order_and_dollars(
    renderer: TemplateRenderer, status: OrderStatus
) -> None:
    email = renderer.render(make_event(status))
    assert email.locale == "en"
    assert "ORD-1001" in email.subject
    assert "Acme Shop" in email.subject
    for body in (email.text, email.html):
        assert "ORD-1001" in body
        assert "John" in body
        assert "$1,234.56" in body
        assert "Coffee mug" in body
    assert 'lang="en"' in email.html


@pytest.mark.parametrize("status", STATUSES)
def test_brazilian_email_shows_the_order_and_reais(
    renderer: TemplateRenderer, status: OrderStatus
) -> None:
    email = renderer.render(make_event(status, customer=customer("pt_BR"), currency="BRL"))
    assert email.locale == "pt-BR"
    assert "ORD-1001" in email.subject
    for body in (email.text, email.html):
        assert "ORD-1001" in body
        assert "Olá, John!" in body
        assert "R$" in body
        assert "1.234,56" in body
    assert 'lang="pt-BR"' in email.html


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_shipped_email_shows_carrier_tracking_code_and_link(
    renderer: TemplateRenderer, locale: str
) -> None:
    email = renderer.render(make_event(OrderStatus.SHIPPED, customer=customer(locale)))
    for body in (email.text, email.html):
        assert "Correios" in body
        assert "BR123456789XX" in body
        assert "https://track.test/BR123456789XX" in body


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_invoiced_email_shows_invoice_number_and_link(
    renderer: TemplateRenderer, locale: str
) -> None:
    email = renderer.render(make_event(OrderStatus.INVOICED, customer=customer(locale)))
    assert "NF-000777" in email.subject
    for body in (email.text, email.html):
        assert "NF-000777" in body
        assert "https://acme.test/invoices/777" in body


def test_dates_are_written_in_the_locale(renderer: TemplateRenderer) -> None:
    english = renderer.render(make_event(OrderStatus.DELIVERED))
    brazilian = renderer.render(make_event(OrderStatus.DELIVERED, customer=customer("pt-BR")))
    assert "January 5, 2025" in english.text
    assert "5 de janeiro de 2025" in brazilian.text


def test_a_late_evening_in_brazil_keeps_its_local_date(renderer: TemplateRenderer) -> None:
    """01:30 UTC on the 6th is still the 5th in São Paulo, where the customer reads it."""
    event = make_event(
        OrderStatus.DELIVERED,
        customer=customer("pt-BR"),
        occurredAt=datetime(2025, 1, 6, 1, 30, tzinfo=UTC),
    )
    assert "5 de janeiro de 2025" in renderer.render(event).text


def test_html_escapes_names_but_text_keeps_them(renderer: TemplateRenderer) -> None:
    event = make_event(
        customer=customer("en", first_name="<script>alert(1)</script>"),
        items=[{"name": 'Mug "XL" & <b>', "quantity": 1}],
    )
    email = renderer.render(event)
    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert "Mug &#34;XL&#34; &amp; &lt;b&gt;" in email.html
    assert "<script>alert(1)</script>" in email.text


def test_non_web_links_are_left_out(renderer: TemplateRenderer) -> None:
    email = renderer.render(make_event(trackingUrl="javascript:alert(1)"))
    assert "javascript:" not in email.html
    assert "BR123456789XX" in email.html


def test_order_without_items_or_total_renders_without_a_summary(
    renderer: TemplateRenderer,
) -> None:
    email = renderer.render(make_event(OrderStatus.HANDLING, items=None, totalValue=None))
    assert "Total" not in email.text
    assert "Total" not in email.html


def test_long_item_lists_are_cut_with_a_count(renderer: TemplateRenderer) -> None:
    items = [{"name": f"Item {n}", "quantity": 1} for n in range(25)]
    email = renderer.render(make_event(items=items))
    assert "Item 19" in email.text
    assert "Item 20" not in email.text
    assert "and 5 more items" in email.text


def test_subject_is_one_line_even_when_data_has_newlines(renderer: TemplateRenderer) -> None:
    email = renderer.render(make_event(store={"name": "Acme\r\n  Shop", "email": "s@acme.test"}))
    assert email.subject == "Acme Shop: order ORD-1001 is on its way"


def test_empty_first_name_gets_a_generic_greeting(renderer: TemplateRenderer) -> None:
    email = renderer.render(make_event(customer=customer("en", first_name=" ")))
    assert email.text.startswith("Hi there,")


@pytest.mark.parametrize(
    ("customer_locale", "store_locale", "expected"),
    [
        ("pt-BR", "en", "pt-BR"),
        ("pt_br", None, "pt-BR"),
        ("PT-br", None, "pt-BR"),
        ("pt-PT", None, "pt-BR"),
        ("pt", None, "pt-BR"),
        ("en-GB", "pt-BR", "en"),
        ("fr", "pt-BR", "en"),
        (None, "pt_BR", "pt-BR"),
        ("", "pt-BR", "pt-BR"),
        (None, None, "en"),
    ],
)
def test_locale_is_the_customers_else_the_stores_else_english(
    customer_locale: str | None, store_locale: str | None, expected: str
) -> None:
    assert choose_locale(customer_locale, store_locale) == expected


def test_store_locale_is_used_when_the_customer_has_none(renderer: TemplateRenderer) -> None:
    event = make_event(
        customer=customer(None),
        store={"name": "Loja", "email": "s@loja.test", "locale": "pt-BR"},
        currency="BRL",
    )
    assert renderer.render(event).locale == "pt-BR"


def test_missing_tracking_for_shipped_names_the_field(renderer: TemplateRenderer) -> None:
    with pytest.raises(TemplateDataMissing, match="SHIPPED needs trackingCode"):
        renderer.render(make_event(OrderStatus.SHIPPED, trackingCode=None))
    with pytest.raises(TemplateDataMissing, match="trackingCarrier"):
        renderer.render(make_event(OrderStatus.SHIPPED, trackingCarrier="  "))


def test_missing_invoice_number_for_invoiced_names_the_field(renderer: TemplateRenderer) -> None:
    with pytest.raises(TemplateDataMissing, match="INVOICED needs invoiceNumber"):
        renderer.render(make_event(OrderStatus.INVOICED, invoiceNumber=None))


def test_total_without_currency_names_the_field(renderer: TemplateRenderer) -> None:
    with pytest.raises(TemplateDataMissing, match="currency"):
        renderer.render(make_event(OrderStatus.HANDLING, currency=None))


def test_unknown_status_is_unsupported(renderer: TemplateRenderer) -> None:
    with pytest.raises(UnsupportedStatus):
        renderer.render(make_event(OrderStatus.UNKNOWN))


def test_store_override_takes_precedence_over_packaged_templates(tmp_path: Path) -> None:
    override = tmp_path / "store-1" / "en"
    override.mkdir(parents=True)
    (override / "shipped.subject.txt").write_text(
        "Your {{ store_name }} parcel {{ tracking_code }}"
    )
    (override / "shipped.html").write_text(
        '{% extends "en/_layout.html" %}{% block message %}<p>Custom {{ first_name }}</p>'
        "{% endblock %}"
    )
    renderer = TemplateRenderer(tmp_path)
    email = renderer.render(make_event())
    assert email.subject == "Your Acme Shop parcel BR123456789XX"
    assert "<p>Custom John</p>" in email.html
    assert "Thanks for shopping with us" in email.html  # the packaged layout still applies
    assert "BR123456789XX" in email.text  # parts without an override stay packaged
    other_store = renderer.render(make_event(storeId="store-2"))
    assert other_store.subject == "Acme Shop: order ORD-1001 is on its way"


def test_an_unsafe_store_id_never_reaches_the_filesystem(tmp_path: Path) -> None:
    """Store ".." would read <overrides>/../en/...: it must get the packaged templates instead."""
    (tmp_path / "overrides").mkdir()
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "shipped.subject.txt").write_text("escaped the store directory")
    email = TemplateRenderer(tmp_path / "overrides").render(make_event(storeId=".."))
    assert email.subject == "Acme Shop: order ORD-1001 is on its way"


@pytest.mark.parametrize(
    ("store_id", "safe"),
    [("store-1", True), ("Store_2.br", True), ("..", False), ("a/b", False), ("a\\b", False)],
)
def test_store_ids_are_checked_as_path_components(store_id: str, safe: bool) -> None:
    assert is_safe_store_id(store_id) is safe


def test_a_missing_override_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing"):
        TemplateRenderer(tmp_path / "nope")
