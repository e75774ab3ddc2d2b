"""What each action does in Qualtrics, for a batch of prepared deliveries.

``addContactToXmd`` and ``triggerXflowWorkflow`` make one call per message, as Segment does.
``upsertContactTransaction`` batches its calls (transactions.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from .actions import ContactPayload, WorkflowPayload
from .errors import DestinationError
from .qualtrics import QualtricsClient
from .worker import Delivery


class AddContactExecutor:
    """POST the contact; the directory's deduplication turns it into an update when it matches."""

    def __init__(self, client: QualtricsClient) -> None:
        self.client = client

    def execute(self, deliveries: Sequence[Delivery]) -> dict[str, DestinationError]:
        errors: dict[str, DestinationError] = {}
        for delivery in deliveries:
            payload: ContactPayload = delivery.payload
            try:
                self.client.create_contact(payload.directoryId, payload.contact_body())
            except DestinationError as exc:
                errors[delivery.record_id] = exc
        return errors


class WorkflowExecutor:
    """POST the event payload to the workflow's JSON-event trigger URL (Qualtrics hosts only)."""

    def __init__(self, client: QualtricsClient) -> None:
        self.client = client

    def execute(self, deliveries: Sequence[Delivery]) -> dict[str, DestinationError]:
        errors: dict[str, DestinationError] = {}
        for delivery in deliveries:
            payload: WorkflowPayload = delivery.payload
            try:
                self.client.trigger_workflow(payload.workflowUrl, payload.eventPayload)
            except DestinationError as exc:
                errors[delivery.record_id] = exc
        return errors
