"""Messages as the console shows them: hostile HTML made inert, attachments named safely."""

from __future__ import annotations

from email.message import EmailMessage

from worker.domain.mime_view import (
    attachment_file,
    download_type,
    plain_text,
    safe_filename,
    sanitize_html,
    view_message,
)


def _message() -> bytes:
    message = EmailMessage()
    message["Subject"] = "<script>alert(1)</script>"
    message["From"] = "a@ct.example.com"
    message["To"] = "b@ct.example.com"
    message.set_content("Plain words & more")
    message.add_alternative(
        '<p onclick="x()">Hi <img src="https://tracker.example/p.gif">'
        '<img src="cid:logo"><a href="javascript:alert(1)">j</a><script>alert(1)</script>'
        '<style>p{}</style><a href="https://shop.example/">shop</a></p>',
        subtype="html",
    )
    html_part = message.get_body(("html",))
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(b"\x89PNG", "image", "png", cid="<logo>")
    message.add_attachment(
        b"#!/bin/sh", maintype="application", subtype="x-sh", filename='../"evil"<x>.sh'
    )
    return message.as_bytes()


def test_html_loses_script_handlers_script_urls_and_remote_images() -> None:
    view = view_message(_message(), lambda index: f"/att/{index}")
    assert view.html is not None
    for dangerous in ("<script", "onclick", "javascript:", "<style", "tracker.example"):
        assert dangerous not in view.html
    assert '<img src="/att/0">' in view.html  # its own inline image, through the console
    assert 'href="https://shop.example/" rel="noopener noreferrer nofollow"' in view.html
    assert view.blocked_images == 1 and view.notes
    assert view.subject == "<script>alert(1)</script>"  # text; the template escapes it


def test_attachments_are_listed_and_served_by_index_with_safe_names_and_types() -> None:
    raw = _message()
    view = view_message(raw, lambda index: "")
    assert [(a.index, a.content_type) for a in view.attachments] == [
        (0, "image/png"), (1, "application/x-sh"),
    ]  # fmt: skip
    found = attachment_file(raw, 1)
    assert found is not None and found.data == b"#!/bin/sh"
    assert found.content_type == "application/octet-stream"
    assert found.filename == "evil_x_.sh"
    assert attachment_file(raw, 2) is None and attachment_file(b"\x00garbage", 0) is None


def test_names_and_types_for_downloads() -> None:
    assert safe_filename(None, 0) == "attachment-1"
    assert safe_filename("  ..\r\n", 3) == "attachment-4"
    assert safe_filename("nota fiscal.pdf", 0) == "nota fiscal.pdf"
    assert download_type("application/pdf") == "application/pdf"
    assert download_type("text/html") == "application/octet-stream"
    assert download_type("image/svg+xml") == "application/octet-stream"


def test_plain_text_falls_back_to_the_sanitised_html() -> None:
    cleaned, _ = sanitize_html("<p>Fish &amp; chips <b>now</b></p>", lambda cid: None)
    view = view_message(b"Content-Type: text/html\r\n\r\n" + cleaned.encode(), lambda i: "")
    assert plain_text(view).strip() == "Fish & chips now"


def test_malformed_mime_still_shows_something() -> None:
    view = view_message(b"Content-Type: multipart/mixed\r\n\r\nno boundary here", lambda i: "")
    assert view.text == "no boundary here" and "malformed" in view.notes[0]
