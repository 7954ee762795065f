"""Render the notification email for an order status from Jinja2 templates, per locale and store.

Templates live in `worker/templates/<locale>/<status>.{subject.txt,txt,html}`; a store can override
any of them with a file at the same relative path under `<overrides_dir>/<store_id>/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    select_autoescape,
)

from worker.contracts.events import OrderStatus, OrderStatusChanged
from worker.domain.errors import Unprocessable

PACKAGED_TEMPLATES: Final = Path(__file__).resolve().parent.parent / "templates"
SUPPORTED_LOCALES: Final = ("en", "pt-BR")  # the first is the last resort
MAX_ITEMS_SHOWN: Final = 20
_SAFE_STORE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
# The events carry no time zone; a locale's most common one dates an evening update correctly
# for most readers, where UTC would often show tomorrow's date to a Brazilian customer.
_LOCALE_TIMEZONES: Final = {"pt-BR": "America/Sao_Paulo"}
_BABEL_LOCALES: Final = {code: Locale.parse(code, sep="-") for code in SUPPORTED_LOCALES}


class TemplateDataMissing(Unprocessable):
    """The event lacks a field its status's email cannot do without."""


class UnsupportedStatus(Unprocessable):
    """There is no email for this status (UNKNOWN: a status newer than this consumer)."""


class TemplateBroken(Unprocessable):
    """A template (a store's override, say) fails to load or render."""


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str
    locale: str


def choose_locale(customer_locale: str | None, store_locale: str | None) -> str:
    """The customer's locale, else the store's, mapped onto one we have templates for."""
    wanted = (customer_locale or "").strip() or (store_locale or "").strip()
    if not wanted:
        return SUPPORTED_LOCALES[0]
    language, _, region = wanted.replace("_", "-").partition("-")
    language = language.lower()
    exact = f"{language}-{region.upper()}" if region else language
    if exact in SUPPORTED_LOCALES:
        return exact
    # Same language, other region (pt-PT -> pt-BR): closer than switching language entirely.
    for supported in SUPPORTED_LOCALES:
        if supported.partition("-")[0].lower() == language:
            return supported
    return SUPPORTED_LOCALES[0]


def is_safe_store_id(store_id: str) -> bool:
    """Whether `store_id` can name a directory: one component, no traversal, no separators."""
    return bool(_SAFE_STORE_ID.fullmatch(store_id)) and ".." not in store_id


class TemplateRenderer:
    """Renders events; compiled templates and per-store environments are cached for reuse.

    The set of stores with overrides is read once, at construction: a new override directory
    takes effect on restart (files inside an existing one too, since templates are not re-read).
    """

    def __init__(self, overrides_dir: Path | None = None) -> None:
        self._default = self._environment(FileSystemLoader(PACKAGED_TEMPLATES))
        self._overrides_dir = overrides_dir
        self._override_stores: frozenset[str] = frozenset()
        if overrides_dir is not None:
            if not overrides_dir.is_dir():
                raise ValueError(f"the templates override directory {overrides_dir} is missing")
            self._override_stores = frozenset(
                path.name
                for path in overrides_dir.iterdir()
                if path.is_dir() and is_safe_store_id(path.name)
            )
        self._by_store: dict[str, Environment] = {}

    def render(self, event: OrderStatusChanged) -> RenderedEmail:
        """The email for the event's status; Unprocessable when there can be none."""
        _check_data(event)
        locale = choose_locale(event.customer.locale, event.store.locale)
        env = self._environment_for(event.store_id)
        context = _context(event, locale)
        base = f"{locale}/{event.status.value.lower()}"
        try:
            subject = env.get_template(f"{base}.subject.txt").render(context)
            return RenderedEmail(
                subject=" ".join(subject.split()),
                text=env.get_template(f"{base}.txt").render(context).strip() + "\n",
                html=env.get_template(f"{base}.html").render(context),
                locale=locale,
            )
        except TemplateError as exc:
            raise TemplateBroken(f"cannot render the {event.status.value} email: {exc}") from None

    def _environment_for(self, store_id: str) -> Environment:
        # A store id that cannot be a directory name simply has no overrides: refusing it would
        # lose the customer's notification over a naming quirk.
        if store_id not in self._override_stores or self._overrides_dir is None:
            return self._default
        env = self._by_store.get(store_id)
        if env is None:
            env = self._environment(
                ChoiceLoader(
                    [
                        FileSystemLoader(self._overrides_dir / store_id),
                        FileSystemLoader(PACKAGED_TEMPLATES),
                    ]
                )
            )
            self._by_store[store_id] = env
        return env

    @staticmethod
    def _environment(loader: BaseLoader) -> Environment:
        return Environment(
            loader=loader,
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            # Templates are read once: no stat() per render on the hot path.
            auto_reload=False,
            cache_size=1000,
        )


def _check_data(event: OrderStatusChanged) -> None:
    if event.status is OrderStatus.UNKNOWN:
        raise UnsupportedStatus(
            "status UNKNOWN has no notification email (a status newer than this consumer?)"
        )
    required: list[tuple[str, str | None]] = []
    if event.status is OrderStatus.INVOICED:
        required.append(("invoiceNumber", event.invoice_number))
    if event.status is OrderStatus.SHIPPED:
        required += [("trackingCode", event.tracking_code)]
        required += [("trackingCarrier", event.tracking_carrier)]
    if event.total_value is not None:
        required.append(("currency", event.currency))
    for name, value in required:
        if value is None or not value.strip():
            raise TemplateDataMissing(
                f"{event.status.value} needs {name}, which event {event.event_id} lacks"
            )


def _context(event: OrderStatusChanged, locale: str) -> dict[str, Any]:
    babel_locale = _BABEL_LOCALES[locale]
    local_time = event.occurred_at.astimezone(_timezone(locale))
    items = event.items or []
    total = None
    if event.total_value is not None and event.currency is not None:
        # totalValue is in cents (see the schema); Decimal keeps 1234.56 exact.
        amount = Decimal(event.total_value) / 100
        total = format_currency(amount, event.currency, locale=babel_locale)
    return {
        "locale": locale,
        "status": event.status.value,
        "order_id": event.order_id,
        "first_name": event.customer.first_name.strip(),
        "customer_name": event.customer.full_name,
        "store_name": event.store.name.strip(),
        "items": [{"name": i.name, "quantity": i.quantity} for i in items[:MAX_ITEMS_SHOWN]],
        "more_items": max(0, len(items) - MAX_ITEMS_SHOWN),
        "total": total,
        "date": format_date(local_time, "long", locale=babel_locale),
        "datetime": format_datetime(local_time, "medium", locale=babel_locale),
        "invoice_number": event.invoice_number,
        "invoice_url": _safe_url(event.invoice_url),
        "tracking_carrier": event.tracking_carrier,
        "tracking_code": event.tracking_code,
        "tracking_url": _safe_url(event.tracking_url),
        "event": event,
    }


def _timezone(locale: str) -> tzinfo:
    name = _LOCALE_TIMEZONES.get(locale)
    if name is None:
        return UTC
    try:
        return ZoneInfo(name)  # cached by zoneinfo after the first call
    except ZoneInfoNotFoundError:  # a slim image without tzdata: UTC beats failing the email
        return UTC


def _safe_url(url: str | None) -> str | None:
    """Only web links reach an href: a `javascript:` URL from a compromised OMS must not."""
    if url is None:
        return None
    url = url.strip()
    return url if url.lower().startswith(("https://", "http://")) else None
