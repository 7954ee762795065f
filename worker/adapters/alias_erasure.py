"""Erasing a person from the `aliases` collection, and what is left of their soft aliases.

Each of the person's aliases loses the real address and name it held and keeps `erasedAt`, so mail
to it is refused as erased rather than unknown. A soft customer alias is more than a pointer: its
`_id` is the person's address in readable form (`ana@example.org-<token>.<domain>`). Its document
therefore moves to `erased:<keyed hash of the alias>` (domain/aliases.erased_alias_id) and its
order's claim in `alias_keys` follows it; `find` looks a recipient up under that hash, so the
relay still knows the old alias as erased while nothing keeps the soft address. The store's soft
alias of the order holds the store's address (business data) and stays as it is.

The keyed hash is the deployment key's: after a rotation an erased soft alias is no longer found
and answers as an unknown address does (the same `550 5.1.1`).
"""

from __future__ import annotations

import contextlib

from pymongo.errors import DuplicateKeyError

from worker.adapters.dialect import Document
from worker.adapters.mongo import Database
from worker.contracts.events import ParticipantRole
from worker.core.crypto import AddressCipher
from worker.domain import aliases as rules
from worker.domain.aliases import Clock, MaskType


class AliasErasure:
    def __init__(self, db: Database, cipher: AddressCipher, clock: Clock) -> None:
        self._aliases = db["aliases"]
        self._keys = db["alias_keys"]
        self._cipher = cipher
        self._clock = clock

    async def find(self, address: str) -> Document | None:
        """The document of an erased soft alias, by the keyed hash of `address` (normalised)."""
        if rules.is_erased_alias_id(address):
            return None
        return await self._aliases.find_one({"_id": self._erased_id(address)})

    async def erase(self, address_hash: str) -> list[str]:
        """Erase the aliases whose real address has this keyed hash; their order ids. Erasing
        again finishes what a crash left half done and changes nothing else."""
        orders = []
        docs = [doc async for doc in self._aliases.find({"realHash": address_hash})]
        for doc in docs:
            erased: Document = {
                "realEnc": None, "realSealed": None, "name": None,
                "erasedAt": doc.get("erasedAt") or self._clock.now(),
            }  # fmt: skip
            if _spells_its_party(doc):
                await self._move_to_hash({**doc, **erased})
            else:
                await self._aliases.update_one({"_id": doc["_id"]}, {"$set": erased})
            orders.append(str(doc["orderId"]))
        return sorted(set(orders))

    async def _move_to_hash(self, doc: Document) -> None:
        """The new document first, then the claim, then the old document: a crash in between
        leaves the alias findable (and refused), and a second erasure finishes the move."""
        old_id = str(doc["_id"])
        new_id = self._erased_id(old_id)
        with contextlib.suppress(DuplicateKeyError):
            await self._aliases.insert_one({**doc, "_id": new_id})
        await self._keys.update_one({"_id": doc["orderKey"]}, {"$set": {"alias": new_id}})
        await self._aliases.delete_one({"_id": old_id})

    def _erased_id(self, alias: str) -> str:
        return rules.erased_alias_id(self._cipher.address_hash(alias))


def _spells_its_party(doc: Document) -> bool:
    """A soft customer alias not moved yet: its address spells the customer's."""
    return (
        doc["mask"] == MaskType.SOFT.value
        and doc["role"] == ParticipantRole.CUSTOMER.value
        and not rules.is_erased_alias_id(str(doc["_id"]))
    )
