"""deleteContact: delete a person's contacts from an XM Directory (a right-to-be-forgotten request).

For each message:
1. A ``contactId`` is deleted as it is. Otherwise the contacts are searched by extRef, phone and email,
   matched together (the upsertContactTransaction lookup): none is a success (``not_found``); more than
   ``MAX_CONTACTS_PER_DELETE`` is the permanent ``ambiguous_contact`` (never a mass delete); a search answer
   naming a contact whose identifiers differ is the permanent ``directory_lookup_error`` (nothing deleted).
2. ``DELETE /API/v3/directories/{directoryId}/contacts/{contactId}`` for each. A 404 means already deleted
   (an earlier attempt, or someone else): a retry after a crash part-way succeeds. A 404 for a given
   ``contactId`` may also mean an unknown directory: one search in the directory tells them apart.
3. Each deleted (or gone) contact id leaves every contact cache of the process (``forget_contact``).

The outcome's log line carries ``deleteResult`` (deleted | already_deleted | not_found), ``contactsDeleted``
and ``identifierHashes`` (``field:sha256`` prefixes, never the values); ``contactsDeleted`` feeds the
``ContactsDeleted`` metric. No call starts that could not finish in time: the message is then left unreported
(deferred), and its next attempt finds what is left to delete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from segment_qualtrics.delivery.outcomes import DeleteResult
from segment_qualtrics.delivery.qualtrics_api import QualtricsApi
from segment_qualtrics.delivery.transactions import forget_contact
from segment_qualtrics.delivery.worker import Progress, QueuedWork, internal_error
from segment_qualtrics.destination.actions import CONTACT_ID, DeleteContactPayload
from segment_qualtrics.destination.errors import DestinationError, PermanentError, RetryableError

# At most this many contacts are deleted for one event: more matches is a mapping mistake (an identifier
# shared by many people, e.g. a constant), not one person asking to be forgotten.
MAX_CONTACTS_PER_DELETE = 5

# The search answer's name for each identifier (the search element shape).
_ELEMENT_FIELDS = {"extRef": "externalDataReference", "email": "email", "phone": "phoneNumber"}

# For the dry run (tools/preview.py): what each Qualtrics call is for, and what its search finds (one contact,
# so the DELETE is shown).
PREVIEW_CONTACT_ID = "CID_FOUND_BY_THE_SEARCH"
PREVIEW_STEPS = {
    "search_contacts": "look the contacts up (no contactId): every match is deleted, none if more than "
                       f"{MAX_CONTACTS_PER_DELETE} match",
    "delete_contact": f"delete the contact ({PREVIEW_CONTACT_ID} stands for each one the search finds; "
                      "404: already deleted)",
}


def identifier_hashes(payload: DeleteContactPayload) -> list[str]:
    """``field:hash`` for the log: sha256 of the value as sent, 16 hex digits. Enough to answer "was this
    person's request carried out?" by hashing the value again; not the value itself."""
    values = {"contactId": payload.contactId} if payload.contactId else payload.lookup_identifiers()
    return [f"{name}:{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"
            for name, value in values.items()]


class DeleteContactExecutor:
    PREVIEW_STEPS = PREVIEW_STEPS
    PREVIEW_SEARCH_FINDS = ({"id": PREVIEW_CONTACT_ID},)

    def __init__(self, client: QualtricsApi, max_contacts: int = MAX_CONTACTS_PER_DELETE) -> None:
        self.client = client
        self.max_contacts = max_contacts

    def execute(self, deliveries: Sequence[QueuedWork], progress: Progress | None = None
                ) -> dict[str, DestinationError]:
        progress = progress or Progress()
        errors: dict[str, DestinationError] = {}
        for delivery in deliveries:
            if not progress.can_call():
                break   # the rest is left unreported: the worker hands it back
            delivery.sent = True
            try:
                finished = self._delete(delivery, progress)
            except Exception as exc:  # noqa: BLE001 - classified or not, it fails only this message
                errors[delivery.sqs_message_id] = internal_error(exc)
                continue
            if finished:
                progress.delivered(delivery)
        return errors

    def _delete(self, delivery: QueuedWork, progress: Progress) -> bool:
        """Delete what the message names; False when time ran out part-way (the next attempt carries on)."""
        payload: DeleteContactPayload = delivery.payload
        detail = delivery.detail
        calls = 0

        def may_call() -> bool:   # the first call was allowed by execute(); each next one asks again
            nonlocal calls
            calls += 1
            return calls == 1 or progress.can_call()

        detail.update(identifierHashes=identifier_hashes(payload), contactsDeleted=0)
        directory_id = payload.directoryId
        if payload.contactId:
            contact_ids = [payload.contactId]
        else:
            may_call()
            contact_ids = self._find(directory_id, payload.lookup_identifiers())
            if not contact_ids:
                detail["deleteResult"] = DeleteResult.NOT_FOUND
                return True
        gone = 0
        for contact_id in contact_ids:
            if not may_call():
                return False
            deleted = self.client.delete_contact(directory_id, contact_id)
            forget_contact(contact_id)
            if deleted:
                detail["contactsDeleted"] += 1
            else:
                gone += 1
        if payload.contactId and gone:
            # A 404 for a contact named by id: gone, or the directory is not there (then nothing was deleted,
            # and must not be reported so). A search in the directory answers 404 only in the second case.
            if not may_call():
                return False
            self.client.search_contacts(directory_id, {"extRef": payload.contactId})
        detail["deleteResult"] = DeleteResult.DELETED if detail["contactsDeleted"] else DeleteResult.ALREADY_DELETED
        return True

    def _find(self, directory_id: str, identifiers: dict[str, str]) -> list[str]:
        matches = self.client.search_contacts(directory_id, identifiers)
        names = ", ".join(identifiers)
        if len(matches) > self.max_contacts:
            raise PermanentError("ambiguous_contact",
                                 f"{len(matches)} or more contacts in directory {directory_id} match {names}; a "
                                 f"delete removes at most {self.max_contacts}: none was deleted")
        contact_ids: list[str] = []
        for element in matches:
            contact_id = element.get("id")
            if not isinstance(contact_id, str) or not CONTACT_ID.fullmatch(contact_id):
                raise RetryableError("qualtrics_bad_response", "search_contacts: a contact without an id of the "
                                     "form CID_...: none was deleted")
            if not _same_person(element, identifiers):
                raise PermanentError("directory_lookup_error",
                                     f"the search in directory {directory_id} by {names} answered a contact whose "
                                     "identifiers differ: none was deleted")
            if contact_id not in contact_ids:
                contact_ids.append(contact_id)
        return contact_ids


def _same_person(element: dict[str, Any], identifiers: dict[str, str]) -> bool:
    """The search element agrees with every identifier it shows (trimmed, case-insensitive; a phone by its
    digits). An identifier the element does not show is left to the search's own filter."""
    for name, wanted in identifiers.items():
        key = _ELEMENT_FIELDS[name]
        if key not in element:
            continue
        found = element[key]
        if not isinstance(found, str):
            return False
        if name == "phone":
            if _digits(found) != _digits(wanted):
                return False
        elif found.strip().casefold() != wanted.strip().casefold():
            return False
    return True


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())
