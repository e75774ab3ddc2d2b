"""What each action does in Qualtrics, for a batch of prepared deliveries.

``addContactToXmd`` and ``triggerXflowWorkflow`` make one call per message, as Segment does.
``upsertContactTransaction`` batches its calls (transactions.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .actions import ContactPayload, WorkflowPayload
from .errors import DestinationError
from .qualtrics import QualtricsClient
from .transactions import TransactionExecutor
from .worker import Delivery


class _OneCallPerMessage:
    """One Qualtrics call per message; a failure fails only its own message."""

    def __init__(self, client: QualtricsClient) -> None:
        self.client = client

    def send(self, payload: Any) -> None:
        raise NotImplementedError

    def execute(self, deliveries: Sequence[Delivery]) -> dict[str, DestinationError]:
        errors: dict[str, DestinationError] = {}
        for delivery in deliveries:
            try:
                self.send(delivery.payload)
            except DestinationError as exc:
                errors[delivery.record_id] = exc
        return errors


class AddContactExecutor(_OneCallPerMessage):
    """POST the contact; the directory's deduplication turns it into an update when it matches."""

    def send(self, payload: ContactPayload) -> None:
        self.client.create_contact(payload.directoryId, payload.contact_body())


class WorkflowExecutor(_OneCallPerMessage):
    """POST the event payload to the workflow's JSON-event trigger URL (Qualtrics hosts only)."""

    def send(self, payload: WorkflowPayload) -> None:
        self.client.trigger_workflow(payload.workflowUrl, payload.eventPayload)


# The executor of each action slug: the worker and the preview build them the same way.
EXECUTORS = {
    "addContactToXmd": AddContactExecutor,
    "upsertContactTransaction": TransactionExecutor,
    "triggerXflowWorkflow": WorkflowExecutor,
}
