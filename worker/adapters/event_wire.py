"""The workers' codec: reads every framing a bus carries, writes the one CT_SCHEMA_FRAMING names.

Reading (worker/contracts/framing.py tells the framing): single-object records resolve against
this repository's schemas; registry-framed records fetch their writer schema from the registry
(cached per id) and resolve it against the current reader schema; CloudEvents are validated
against the JSON Schema. What happens when that fails:

| failure                                   | outcome                                          |
| ----------------------------------------- | ------------------------------------------------ |
| registry not reached, timeout, 5xx, 429   | transient: retried with backoff until it answers; |
|                                           | the batch waits, nothing is committed or lost     |
| registry refuses our credentials (401/403)| the process stops with one line naming the setting|
| unknown id (404)                          | retried for UNKNOWN_ID_ATTEMPTS (a replica        |
|                                           | catching up), then a dead letter naming the id    |
| writer schema not resolvable to the reader| dead letter: the same bytes cannot ever be read   |
| registry id but no CT_SCHEMA_REGISTRY_URL | dead letter naming the setting (replay once set)  |

Writing: `single-object` (the default) needs nothing; `confluent` registers (or looks up) the
timeline schema under the subject `<timeline topic>-value` at start-up and frames every record
with the registry's id.
"""

from __future__ import annotations

import asyncio
import json

from worker.adapters.schema_registry import (
    RegistryRefused,
    SchemaNotFound,
    SchemaRegistry,
    is_transient,
)
from worker.contracts.cloudevents_json import CloudEventReader
from worker.contracts.codec import (
    SCHEMA_FILES,
    ConfluentWriter,
    DecodeError,
    Headers,
    KnownSchema,
    ModelT,
    SchemaSet,
    SingleObjectCodec,
    parse_writer_schema,
    read_with_writer,
)
from worker.contracts.events import Contract, TimelineEvent
from worker.contracts.framing import (
    CloudEvent,
    IdKind,
    RegistryFramed,
    SingleObject,
    detect_framing,
)
from worker.core.config import Rejected, Settings
from worker.core.retry import retry_transient

UNKNOWN_ID_ATTEMPTS = 4
UNKNOWN_ID_DELAY_S = 1.0


def value_subject(topic: str) -> str:
    """The registry subject of a topic's values (Confluent's TopicNameStrategy)."""
    return f"{topic}-value"


def schema_text(schema: KnownSchema) -> str:
    """A schema file as registered: its JSON, compact (registries compare canonical forms)."""
    return json.dumps(json.loads(schema.path.read_text(encoding="utf-8")), separators=(",", ":"))


class EventWire:
    def __init__(
        self,
        settings: Settings,
        schemas: SchemaSet | None = None,
        registry: SchemaRegistry | None = None,
    ) -> None:
        self._settings = settings
        self._schemas = schemas or SchemaSet.from_directory()
        self._single_object = SingleObjectCodec(self._schemas)
        self._cloudevents = CloudEventReader()
        if registry is None and settings.schema_registry_url is not None:
            registry = SchemaRegistry(settings)
        self._registry = registry
        self._writers: dict[tuple[IdKind, int], KnownSchema] = {}
        self._confluent: ConfluentWriter | None = None
        self._starting = asyncio.Lock()

    @property
    def registry(self) -> SchemaRegistry | None:
        return self._registry

    async def start(self) -> None:
        """With CT_SCHEMA_FRAMING=confluent: the timeline schema's id, registered if new."""
        if self._settings.schema_framing != "confluent" or self._confluent is not None:
            return
        async with self._starting:
            if self._confluent is not None:
                return
            registry = self._required_registry()
            schema = self._schemas.current[SCHEMA_FILES[TimelineEvent]]
            subject = value_subject(self._settings.topic_timeline)
            try:
                schema_id = await retry_transient(
                    lambda: registry.register(subject, schema_text(schema)),
                    name="registry.register",
                    is_transient=is_transient,
                    max_delay=self._settings.retry_max_delay_s,
                )
            except RegistryRefused as exc:
                raise Rejected(
                    f"the schema registry refused {schema.path.name} under subject {subject} "
                    f"({exc}): run `ct schemas check`"
                ) from None
            self._confluent = ConfluentWriter(self._schemas, {TimelineEvent: schema_id})

    def encode(self, model: Contract) -> bytes:
        if self._settings.schema_framing == "single-object":
            return self._single_object.encode(model)
        if self._confluent is None:
            raise RuntimeError("EventWire.start() must run before a confluent-framed encode")
        return self._confluent.encode(model)

    async def read(self, value: bytes | None, headers: Headers, model_type: type[ModelT]) -> ModelT:
        framed = detect_framing(value, headers)
        if isinstance(framed, SingleObject):
            writer = self._single_object.writer_by_fingerprint(framed.fingerprint)
            return read_with_writer(framed.body, writer, self._reader(model_type), model_type)
        if isinstance(framed, CloudEvent):
            return self._cloudevents.read(framed, model_type)
        writer = await self._writer_of(framed)
        return read_with_writer(framed.body, writer, self._reader(model_type), model_type)

    async def aclose(self) -> None:
        if self._registry is not None:
            await self._registry.aclose()

    def _reader(self, model_type: type[Contract]) -> KnownSchema:
        return self._schemas.current[SCHEMA_FILES[model_type]]

    async def _writer_of(self, framed: RegistryFramed) -> KnownSchema:
        key = (framed.kind, framed.schema_id)
        if key in self._writers:
            return self._writers[key]
        if self._registry is None:
            raise DecodeError(
                f"{framed.framing} record (registry {framed.kind} {framed.schema_id}) but "
                "CT_SCHEMA_REGISTRY_URL is not set"
            )
        registry = self._registry
        fetch = (
            registry.schema_by_global_id if framed.kind is IdKind.GLOBAL else registry.schema_by_id
        )
        text = None
        for attempt in range(UNKNOWN_ID_ATTEMPTS):
            try:
                text = await retry_transient(
                    lambda: fetch(framed.schema_id),
                    name="registry.schema",
                    is_transient=is_transient,
                    max_delay=self._settings.retry_max_delay_s,
                )
                break
            except SchemaNotFound:
                if attempt + 1 < UNKNOWN_ID_ATTEMPTS:
                    await asyncio.sleep(UNKNOWN_ID_DELAY_S * (attempt + 1))
            except RegistryRefused as exc:
                raise DecodeError(
                    f"registry refused {framed.kind} {framed.schema_id}: {exc}"
                ) from None
        if text is None:
            raise DecodeError(
                f"{framed.framing} record: {framed.kind} {framed.schema_id} is not in the "
                f"registry at {registry.url}"
            )
        writer = parse_writer_schema(text, f"registry {framed.kind} {framed.schema_id}")
        self._writers[key] = writer
        return writer

    def _required_registry(self) -> SchemaRegistry:
        if self._registry is None:
            raise Rejected(
                "CT_SCHEMA_REGISTRY_URL is not set: CT_SCHEMA_FRAMING=confluent needs it"
            )
        return self._registry
