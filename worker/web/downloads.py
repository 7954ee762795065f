"""Attachments as downloads: always `attachment`, a safe type or octet-stream, and a sandbox."""

from __future__ import annotations

from urllib.parse import quote

from fastapi.responses import Response

from worker.domain.mime_view import AttachmentFile
from worker.web.security import ATTACHMENT_CSP


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII fallback and the UTF-8 name (the name is already safe_filename'd)."""
    fallback = filename.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def attachment_response(found: AttachmentFile) -> Response:
    return Response(
        found.data,
        media_type=found.content_type,
        headers={
            "content-disposition": content_disposition(found.filename),
            "content-security-policy": ATTACHMENT_CSP,
        },
    )
