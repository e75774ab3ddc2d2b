"""The port the executors deliver through: the Qualtrics calls they make, as a Protocol.

adapters/qualtrics.py's ``QualtricsClient`` implements it over HTTP (requests); the delivery core never
imports that adapter, so it stays free of requests and can be driven by any implementation (tests use fakes
that record the calls). Every method raises ``DestinationError`` subclasses (destination/errors.py) on failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class TransactionResult:
    created: dict[str, str]                 # key -> CTR_ id
    unprocessed: dict[str, dict[str, Any]]  # key -> {"error", "errorMessage"}
    request_id: str | None


class QualtricsApi(Protocol):
    def create_contact(self, directory_id: str, contact: dict[str, Any]) -> str:
        """Create or update (by extRef / email / phone) a directory contact; its id."""
        ...

    def search_contacts(self, directory_id: str, identifiers: dict[str, str]) -> list[dict[str, Any]]:
        """The directory's contacts matching every identifier (eq filters joined with AND)."""
        ...

    def create_transactions(self, directory_id: str, transactions: dict[str, dict[str, Any]]) -> TransactionResult:
        ...

    def list_contact_transactions(self, directory_id: str, contact_id: str) -> list[dict[str, Any]]:
        """Every transaction of a contact, all pages."""
        ...

    def delete_contact(self, directory_id: str, contact_id: str) -> bool:
        """DELETE one contact: True when deleted, False when Qualtrics answered 404."""
        ...

    def trigger_workflow(self, url: str, payload: dict[str, Any] | None) -> None:
        ...
