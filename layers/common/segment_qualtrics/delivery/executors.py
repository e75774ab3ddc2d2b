"""What each action does in Qualtrics, for a batch of prepared deliveries.

``addContactToXmd`` and ``triggerXflowWorkflow`` make one call per message, as Segment does, up to
``concurrency`` of them at once (threads over the client's one pooled session): with Qualtrics answering in
about a second, calls one after another would cap an action far below Qualtrics' limits.
``upsertContactTransaction`` batches its calls (transactions.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from segment_qualtrics.delivery.qualtrics_api import QualtricsApi
from segment_qualtrics.delivery.worker import Progress, QueuedWork, internal_error
from segment_qualtrics.destination.actions import ContactPayload, WorkflowPayload
from segment_qualtrics.destination.errors import DestinationError


class _OneCallPerMessage:
    """One Qualtrics call per message; a failure fails only its own message.

    Each success is reported at once (the worker marks it done, per message, as its call returns); no call
    starts that could not finish before the invocation's timeout: the rest is left unreported (deferred).
    """

    def __init__(self, client: QualtricsApi, concurrency: int = 1) -> None:
        self.client = client
        self.concurrency = concurrency   # calls in flight at once within a batch

    def send(self, payload: Any) -> None:
        raise NotImplementedError

    def execute(self, deliveries: Sequence[QueuedWork], progress: Progress | None = None
                ) -> dict[str, DestinationError]:
        progress = progress or Progress()
        errors: dict[str, DestinationError] = {}
        queue: Iterator[QueuedWork] = iter(deliveries)
        lock = threading.Lock()

        def run() -> None:
            # Each thread takes the next message until none is left or no call could finish in time.
            while True:
                with lock:
                    delivery = next(queue, None)
                    if delivery is None or not progress.can_call():
                        return
                delivery.sent = True
                try:
                    self.send(delivery.payload)
                except Exception as exc:  # noqa: BLE001 - classified or not, it fails only this message
                    errors[delivery.sqs_message_id] = internal_error(exc)
                    continue
                progress.delivered(delivery)

        threads = max(1, min(self.concurrency, len(deliveries)))
        if threads == 1:
            run()
        else:
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="qualtrics") as pool:
                for future in [pool.submit(run) for _ in range(threads)]:
                    future.result()
        return errors


class AddContactExecutor(_OneCallPerMessage):
    """POST the contact; the directory's deduplication turns it into an update when it matches."""

    def send(self, payload: ContactPayload) -> None:
        self.client.create_contact(payload.directoryId, payload.contact_body())


class WorkflowExecutor(_OneCallPerMessage):
    """POST the event payload to the workflow's JSON-event trigger URL (Qualtrics hosts only)."""

    def send(self, payload: WorkflowPayload) -> None:
        self.client.trigger_workflow(payload.workflowUrl, payload.eventPayload)

