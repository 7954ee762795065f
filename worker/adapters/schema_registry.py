"""A schema registry's Confluent-compatible REST API (Apicurio's /apis/ccompat/v7, Confluent's).

Writer schemas fetched by id are cached for the life of the process, without bound: a
registry's ids are immutable, and a bus carries a handful of schema versions, not millions.
Failures come out as three kinds, because the caller must treat them differently:

- `RegistryUnavailable`: not reached, timed out, 5xx or 429. Transient: the consumer waits
  and retries; it commits nothing meanwhile, so nothing is lost.
- `SchemaNotFound`: the registry answered that it has no such id (404). Its reader retries
  briefly (a replica catching up) and then dead-letters the record with the id.
- `Rejected` (worker.core.config): 401/403, a certificate refused. An operator must change a
  setting; the process stops with one line naming it.
Anything else the registry refuses (409 incompatible, 422 invalid) is `RegistryRefused`.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from worker.contracts.references import dereference
from worker.core.config import Rejected, Settings

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
BACKWARD = "BACKWARD"
MAX_REFERENCE_DEPTH = 16
REGISTER_ATTEMPTS = 4


class RegistryUnavailable(Exception):
    """The registry did not answer usefully (network, timeout, 5xx, 429): try again later."""


class SchemaNotFound(Exception):
    """The registry holds no schema with this id."""


class RegistryRefused(Exception):
    """The registry answered no to a request: `status` and its message (no record data)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Compatibility:
    compatible: bool
    reasons: tuple[str, ...] = ()


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, RegistryUnavailable)


class SchemaRegistry:
    """One client per process. `url` is the ccompat base (…/apis/ccompat/v7)."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None) -> None:
        if settings.schema_registry_url is None:
            raise Rejected("CT_SCHEMA_REGISTRY_URL is not set: a schema registry is needed here")
        self.url = settings.schema_registry_url.rstrip("/")
        self._client = client or _client(settings)
        self._by_id: dict[tuple[str, int], str] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    @property
    def native_url(self) -> str:
        """Apicurio's own API beside its ccompat one: global ids are served only there."""
        base, found, _ = self.url.rpartition("/apis/ccompat/")
        return f"{base}/apis/registry/v2" if found else self.url

    async def schema_by_id(self, schema_id: int) -> str:
        """The self-contained schema of a ccompat schema id (Confluent's id, Apicurio's content
        id), its references inlined."""
        key = ("schema", schema_id)
        if key not in self._by_id:
            body = await self._request("GET", f"/schemas/ids/{schema_id}")
            references = body.get("references") or []
            self._by_id[key] = await self._resolved(_schema_text(body), references, 0)
        return self._by_id[key]

    async def schema_by_global_id(self, global_id: int) -> str:
        """The self-contained schema of an Apicurio global id (its serdes' default id)."""
        key = ("global", global_id)
        if key not in self._by_id:
            base = f"{self.native_url}/ids/globalIds/{global_id}"
            body = await self._request("GET", base)
            listed = await self._request("GET", f"{base}/references")
            references = [
                {"name": r.get("name"), "subject": r.get("artifactId"), "version": r.get("version")}
                for r in listed.get("items", [])
            ]
            self._by_id[key] = await self._resolved(_schema_text(body), references, 0)
        return self._by_id[key]

    async def _resolved(self, text: str, references: list[Any], depth: int) -> str:
        """`text` with its references (name, subject, version) fetched and inlined."""
        if not references:
            return text
        if depth >= MAX_REFERENCE_DEPTH:
            raise RegistryRefused(200, f"schema references nest deeper than {depth}")
        named: dict[str, Any] = {}
        for ref in references:
            if not isinstance(ref, dict) or not ref.get("name") or not ref.get("subject"):
                raise RegistryRefused(200, "a schema reference without name or subject")
            subject, version = quote(str(ref["subject"]), safe=""), quote(str(ref["version"]))
            body = await self._request("GET", f"/subjects/{subject}/versions/{version}")
            inner = await self._resolved(
                _schema_text(body), body.get("references") or [], depth + 1
            )
            named[str(ref["name"])] = _loads(inner)
        return json.dumps(dereference(_loads(text), named))

    async def register(self, subject: str, schema: str) -> int:
        """The id of `schema` under `subject`, registering it if it is new there.

        Replicas starting together race to create a new subject, and Apicurio answers the
        loser 409 "already exists": then the schema is looked up, or registered again once
        the winner's version is there. A 409 for an incompatible schema is raised.
        """
        for _ in range(REGISTER_ATTEMPTS - 1):
            try:
                return await self._register(subject, schema)
            except RegistryRefused as exc:
                if exc.status != 409 or "incompatib" in exc.message.lower():
                    raise
            try:
                found = await self._request("POST", f"/subjects/{subject}", {"schema": schema})
                return int(found["id"])
            except SchemaNotFound:
                continue
        return await self._register(subject, schema)

    async def _register(self, subject: str, schema: str) -> int:
        body = await self._request("POST", f"/subjects/{subject}/versions", {"schema": schema})
        return int(body["id"])

    async def set_compatibility(self, subject: str, level: str = BACKWARD) -> None:
        await self._request("PUT", f"/config/{subject}", {"compatibility": level})

    async def compatibility_level(self, subject: str) -> str | None:
        try:
            body = await self._request("GET", f"/config/{subject}")
        except SchemaNotFound:
            return None
        level = body.get("compatibilityLevel") or body.get("compatibility")
        return str(level) if level else None

    async def check(self, subject: str, schema: str) -> Compatibility | None:
        """Whether `schema` may follow the subject's latest version; None: no such subject."""
        try:
            body = await self._request(
                "POST",
                f"/compatibility/subjects/{subject}/versions/latest?verbose=true",
                {"schema": schema},
            )
        except SchemaNotFound:
            return None
        reasons = tuple(str(m) for m in body.get("messages") or () if m)
        if not reasons and body.get("reason"):
            reasons = (str(body["reason"]),)
        return Compatibility(bool(body.get("is_compatible")), reasons)

    async def _request(self, method: str, path: str, payload: object = None) -> Any:
        url = path if path.startswith("http") else f"{self.url}{path}"
        try:
            response = await self._client.request(
                method, url, json=payload, headers={"Accept": f"{CONTENT_TYPE}, application/json"}
            )
        except httpx.TransportError as exc:
            if _certificate_refused(exc):
                raise Rejected(
                    f"the schema registry's certificate is not trusted ({self.url}): set "
                    "CT_SCHEMA_REGISTRY_CA_FILE to the CA that signed it"
                ) from None
            raise RegistryUnavailable(f"{self.url}: {type(exc).__name__}") from None
        status = response.status_code
        if status in (401, 403):
            raise Rejected(
                f"the schema registry refused these credentials ({status}): check "
                "CT_SCHEMA_REGISTRY_USERNAME and CT_SCHEMA_REGISTRY_PASSWORD"
            )
        if status == 429 or status >= 500:
            raise RegistryUnavailable(f"{self.url}: HTTP {status}")
        body = _json(response)
        if status == 404:
            raise SchemaNotFound(str(body.get("message", "not found"))[:200])
        if status >= 400:
            raise RegistryRefused(status, str(body.get("message", response.reason_phrase))[:500])
        return body


def _client(settings: Settings) -> httpx.AsyncClient:
    auth = None
    if settings.schema_registry_username and settings.schema_registry_password:
        auth = httpx.BasicAuth(
            settings.schema_registry_username,
            settings.schema_registry_password.get_secret_value(),
        )
    verify: ssl.SSLContext | bool = True
    if settings.schema_registry_ca_file is not None:
        verify = ssl.create_default_context(cafile=str(settings.schema_registry_ca_file))
    return httpx.AsyncClient(auth=auth, verify=verify, timeout=settings.schema_registry_timeout_s)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"message": f"HTTP {response.status_code}, not JSON"}
    # A list (Apicurio's references) comes back as {"items": [...]}.
    return body if isinstance(body, dict) else {"items": body}


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise RegistryRefused(200, "the registry's schema is not JSON") from None


def _schema_text(body: dict[str, Any]) -> str:
    """ccompat answers {"schema": "..."}; Apicurio's native API answers the schema itself."""
    if isinstance(body.get("schema"), str) and "type" not in body:
        return str(body["schema"])
    return json.dumps(body)


def _certificate_refused(exc: httpx.TransportError) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
