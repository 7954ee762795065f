"""How an alias document holds the party behind it: a customer's real address and name under
their own subject key (erasure shreds them, in backups too), a store's or an external party's
under the deployment key, their name in clear (business data)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from bson import Binary

from worker.adapters.dialect import Document
from worker.adapters.subject_keys import SubjectKeys
from worker.contracts.events import ParticipantRole
from worker.core.crypto import AddressCipher, SubjectKey
from worker.domain.aliases import Party

Keys = dict[str, SubjectKey | None]


@dataclass(frozen=True, slots=True)
class OpenedParty:
    real_address: str  # "" once erased
    name: str | None
    erased: bool


def _associated(alias: str) -> str:
    # A purpose of its own, so that a sealed address opens as nothing else.
    return f"alias:{alias.strip().lower()}"


class AliasSealing:
    def __init__(self, cipher: AddressCipher, subject_keys: SubjectKeys | None) -> None:
        self._cipher = cipher
        self._subject_keys = subject_keys

    async def prepare(self, customers: list[str], created: datetime) -> None:
        """Create these customers' subject keys together, ahead of `sealed` (which then finds
        them cached): the batch of `AliasStore.prepare_orders`."""
        if self._subject_keys is not None:
            await self._subject_keys.for_addresses(customers, since=created)

    async def sealed(
        self, party: Party, alias: str, role: ParticipantRole, created: datetime
    ) -> Document:
        """The fields of a new alias document that hold its party."""
        subject = None
        if self._subject_keys is not None and role is ParticipantRole.CUSTOMER:
            subject = await self._subject_keys.for_address(party.address, since=created)
        if subject is None:
            return {
                "realEnc": Binary(self._cipher.encrypt(party.address, alias)),
                "name": party.name,
            }
        sealed = subject.seal_bytes(party.address.encode("utf-8"), _associated(alias))
        return {
            "realEnc": None,
            "realSealed": Binary(sealed),
            "subjectId": subject.subject_id,
            "name": subject.seal_text(party.name) if party.name else None,
        }

    async def keys(self, docs: Iterable[Document]) -> Keys:
        """The subject keys these documents need (cached by SubjectKeys): None when erased."""
        subject_ids = {str(d["subjectId"]) for d in docs if d.get("subjectId")}
        if self._subject_keys is None:
            return dict.fromkeys(subject_ids)
        return await self._subject_keys.keys(subject_ids)

    def opened(self, doc: Document, keys: Keys) -> OpenedParty:
        erased = doc.get("erasedAt") is not None
        subject_id = doc.get("subjectId")
        if not subject_id:
            real = self._cipher.decrypt(bytes(doc["realEnc"]), doc["_id"]) if doc.get(
                "realEnc"
            ) is not None else ""  # fmt: skip
            return OpenedParty(real, doc.get("name"), erased)
        key = keys.get(subject_id)
        if key is None or doc.get("realSealed") is None:
            return OpenedParty("", None, True)  # its subject's key is gone: so is the person
        real = key.open_bytes(bytes(doc["realSealed"]), _associated(doc["_id"])).decode("utf-8")
        name = doc.get("name")
        return OpenedParty(real, key.open_text(name) if name else None, erased)
