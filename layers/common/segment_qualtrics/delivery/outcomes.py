"""The one name of each way a queued message ends (docs/error-model.md), and deleteContact's results.

The values are the ``outcome`` key of the worker's log lines, which operators query: never change one.
``label`` is the same name with spaces, the log line's message and the preview's human text.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    DELIVERED = "delivered"                    # its call succeeded and it was marked done
    DUPLICATE = "duplicate"                    # already delivered (or in flight): skipped
    DEFERRED = "deferred"                      # not started, no time left in the invocation: handed back at once
    RETRIED = "retried"                        # a transient error: handed back after the backoff delay
    DEAD_LETTERED = "dead_lettered"            # sent to the DLQ with its reason
    DEAD_LETTER_FAILED = "dead_letter_failed"  # the DLQ send failed: left for SQS to redeliver
    COMPLETE_FAILED = "complete_failed"        # delivered, but its idempotency record could not be marked done
    RATE_LIMITED = "rate_limited"              # the rate limit had no call left in time: handed back, no attempt
    REQUEUED = "requeued"                      # rate-limited again on a later receive: re-enqueued as a fresh copy

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")

    @property
    def is_routine(self) -> bool:
        """Logged at INFO: nothing for an operator to look at (the others are WARNING)."""
        return self in _ROUTINE


_ROUTINE = frozenset({Outcome.DELIVERED, Outcome.DUPLICATE, Outcome.RATE_LIMITED, Outcome.REQUEUED})


class DeleteResult(StrEnum):
    """deleteContact's ``deleteResult`` on its outcome's log line (delivery/executors_delete.py)."""

    DELETED = "deleted"                  # at least one contact deleted
    ALREADY_DELETED = "already_deleted"  # matched, and gone by the time of the DELETE
    NOT_FOUND = "not_found"              # no contact matched: nothing to delete, a success
