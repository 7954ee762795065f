"""The console in a real browser: Debian's Chromium, driven by Playwright, started once.

A support person's and an admin's day: sign in, find the demo order, read its conversation (no
real address on the page of a hard store), open a message and download its attachment, switch
a store to Soft and see the warning, replay a dead letter, sign out. Every page is screenshotted
under the test's temporary directory; CT_UPDATE_SCREENSHOTS=1 also writes them to
docs/screenshots/ for the README. No browser is ever downloaded: Playwright drives
/usr/bin/chromium (`make tools` installs it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

from tests.conftest import REPO
from tests.web.conftest import ADMIN, PASSWORD, Console, Tenants

pytestmark = [pytest.mark.stack, pytest.mark.browser]
CHROMIUM = Path("/usr/bin/chromium")
# Without these, Chromium reaches for Google's hosts (updates, sync, field trials, QUIC probes),
# which nothing here may reach.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
DOCS = REPO / "docs" / "screenshots"


@pytest.fixture(scope="package")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BrowserContext]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: run `make tools`", pytrace=False)
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            await context.close()


class Camera:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.shots: list[Path] = []

    async def shoot(self, page: Page, name: str) -> None:
        path = self.directory / f"{len(self.shots) + 1:02d}-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)

    def keep(self) -> None:
        if os.environ.get("CT_UPDATE_SCREENSHOTS") == "1":
            DOCS.mkdir(parents=True, exist_ok=True)
            for shot in self.shots:
                shutil.copy(shot, DOCS / shot.name.split("-", 1)[1])


async def test_a_day_in_the_console(
    console: Console, browser: BrowserContext, tmp_path: Path
) -> None:
    story = console.story
    camera = Camera(tmp_path)
    page = await browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))

    await page.goto(console.url + "/orders")
    assert await page.title() == "Sign in · Conversation Tracker"
    await camera.shoot(page, "login")
    await page.fill("input[name=username]", ADMIN)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/orders")
    await camera.shoot(page, "orders")

    await page.fill("input[name=q]", story.hard_order)
    await page.click("form.search button")
    await page.wait_for_url(f"**/orders/{story.hard_order}")
    assert await page.locator(".step.current .what").inner_text() == "Shipped"
    assert await page.locator("article.message").count() == 6
    text = await page.inner_text("body")
    for address in story.real_addresses:
        assert address not in text, f"{address} is on the page of a hard store's order"
    assert story.customer_alias in text
    await camera.shoot(page, "order-conversation")

    notice = page.locator("article.message", has_text="Delivery window for your parcel").first
    await notice.locator("a", has_text="Open message").click()
    await page.wait_for_selector("pre.mail-text")
    assert "arrives tomorrow" in await page.inner_text("pre.mail-text")
    await camera.shoot(page, "message")
    async with page.expect_download() as download_info:
        await page.click("ul.files a")
    download = await download_info.value
    assert download.suggested_filename == "delivery-slip.pdf"
    saved = tmp_path / "delivery-slip.pdf"
    await download.save_as(saved)
    assert saved.read_bytes().startswith(b"%PDF-1.4")

    await page.goto(f"{console.url}/orders/{story.hard_order}")
    hostile = page.locator("article.message", has_text="Urgent").first
    await hostile.locator("a", has_text="Open message").click()
    await page.wait_for_selector(".mail-html")
    await camera.shoot(page, "hostile-message-inert")

    await page.goto(console.url + "/stores")
    await camera.shoot(page, "stores")
    await page.click("a[href='/stores/aurora']")
    await page.check("input[name=mask][value=soft]")
    await page.click("main form button[type=submit]")
    await page.wait_for_url("**/stores/aurora?saved=1")
    warning = await page.locator(".alert.warn").inner_text()
    assert "Soft masking is on" in warning and "readable and reversible" in warning
    await camera.shoot(page, "store-soft-warning")

    await page.goto(console.url + "/dlq")
    row = page.locator("tr", has_text=console.settings.topic_order_status).first
    assert "not Avro" in await row.inner_text()
    await row.locator("button").click()
    await page.wait_for_selector(".alert.ok")
    assert "Replayed 1 record" in await page.locator(".alert.ok").inner_text()
    assert "replayed" in await page.locator("tr", has_text="not Avro").first.inner_text()
    await camera.shoot(page, "dead-letters")

    await page.goto(console.url + "/audit")
    audit = await page.inner_text("table")
    for action in ("message.open", "attachment.open", "store.settings", "dlq.replay"):
        assert action in audit
    await camera.shoot(page, "audit")
    await page.goto(console.url + "/users")
    await camera.shoot(page, "users")
    await page.goto(console.url + "/tokens")
    await camera.shoot(page, "tokens")

    await page.click("button.link")  # sign out
    await page.wait_for_url("**/login")
    await page.goto(console.url + "/orders")
    assert await page.title() == "Sign in · Conversation Tracker"
    cookies = {c["name"] for c in await browser.cookies()}
    assert "__Host-ct-session" not in cookies

    assert dialogs == [], "a page ran script"
    assert [url for url in failed if not url.startswith(console.url)] == []
    camera.keep()


async def test_a_scoped_support_user_sees_only_its_stores_orders(
    console: Console, tenants: Tenants, browser: BrowserContext, tmp_path: Path
) -> None:
    await browser.clear_cookies()
    page = await browser.new_page()
    await page.goto(console.url + "/orders")
    await page.fill("input[name=username]", "bazar-support")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/orders")
    listed = await page.inner_text("main")
    assert tenants.orders["bazar"] in listed and tenants.orders["aurora"] not in listed
    options = await page.locator("select[name=store] option").all_inner_texts()
    assert options == ["All stores", "bazar"]
    await page.screenshot(path=str(tmp_path / "scoped-orders.png"), full_page=True)

    await page.fill("input[name=q]", tenants.orders["aurora"])
    await page.click("form.search button")
    await page.wait_for_load_state()
    assert "/orders/" not in page.url.split("?")[0].removeprefix(console.url + "/orders")
    assert await page.locator(f"a[href='/orders/{tenants.orders['aurora']}']").count() == 0
    await page.goto(f"{console.url}/orders/{tenants.orders['aurora']}")
    assert "No order" in await page.inner_text("main")  # as for an order that does not exist

    await page.goto(console.url + "/orders")
    await page.fill("input[name=q]", tenants.orders["bazar"])
    await page.click("form.search button")
    await page.wait_for_url(f"**/orders/{tenants.orders['bazar']}")
    await page.click("button.link")  # sign out
    await page.wait_for_url("**/login")
    await page.close()
