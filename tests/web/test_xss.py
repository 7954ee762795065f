"""Hostile content renders inert: script in a subject, a name, a body and an attachment name.

The pages are parsed as a browser would; no script element, no event-handler attribute and no
`javascript:` URL may come out of them, whatever the message said.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from tests.web.conftest import Console, Session
from tests.web.story import HOSTILE_FILE

pytestmark = pytest.mark.stack


class ActiveContent(HTMLParser):
    """Collects everything in a page that could run: script, handlers, script URLs, frames."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        harmless_meta = tag == "meta" and (
            dict(attrs).get("name") in ("viewport", "referrer") or "charset" in dict(attrs)
        )
        if tag in ("script", "iframe", "object", "embed", "base", "meta") and not harmless_meta:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"{tag} {name}=")
            if name in ("href", "src", "action", "formaction") and value:
                if value.strip().lower().startswith(("javascript:", "data:text", "vbscript:")):
                    self.found.append(f"{tag} {name}={value}")
                if name == "src" and value.startswith(("http:", "https:", "//")):
                    self.found.append(f"remote {tag} {name}={value}")


def active(html: str) -> list[str]:
    parser = ActiveContent()
    parser.feed(html)
    return parser.found


async def test_the_thread_shows_hostile_fields_as_text(console: Console, admin: Session) -> None:
    page = await admin.get(f"/orders/{console.story.hard_order}")
    assert page.status_code == 200
    assert active(page.text) == []
    assert "Urgent &lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text  # the sender's name, as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.html" in page.text or "_script_" in page.text


async def test_the_opened_message_is_sanitised_and_its_attachment_cannot_run(
    console: Console, admin: Session
) -> None:
    story = console.story
    thread = await admin.client.get(
        f"/api/orders/{story.hard_order}/conversation",
        headers={"Authorization": f"Bearer {console.admin_token}"},
    )
    hostile = next(m for m in thread.json()["messages"] if m["subject"].startswith("Urgent"))
    assert hostile["attachmentNames"] == [HOSTILE_FILE]
    page = await admin.get(f"/orders/{story.hard_order}/messages/{hostile['id']}")
    assert page.status_code == 200
    assert active(page.text) == []
    assert "remote image(s) blocked" in page.text
    assert 'href="https://hostile.example/ok"' in page.text  # a plain link survives, inert
    assert 'rel="noopener noreferrer nofollow"' in page.text
    link = next(
        line for line in page.text.splitlines() if "/attachments/" in line and "download" in line
    )
    assert "<script" not in link
    download = await admin.get(link.split('href="', 1)[1].split('"', 1)[0])
    assert download.headers["content-type"] == "application/octet-stream"  # never text/html
    assert download.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in download.headers["content-security-policy"]
    assert "<" not in download.headers["content-disposition"]
