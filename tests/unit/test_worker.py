"""The worker core: outcomes, dead-lettering, retries and idempotency (worker.py, idempotency.py).

The executor, dead-letter queue and visibility control are small in-memory fakes (ports); the
idempotency store is the real in-memory one with a hand-driven clock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from segment_qualtrics.delivery.idempotency import ClaimState, MemoryIdempotencyStore
from segment_qualtrics.delivery.worker import (
    MAX_VISIBILITY_SECONDS,
    Progress,
    QueuedWork,
    RetryPolicy,
    Worker,
    internal_error,
    may_have_landed,
)
from segment_qualtrics.destination.envelope import QueueMessage, sqs_entry_problem
from segment_qualtrics.destination.errors import DestinationError, PermanentError, RetryableError
from segment_qualtrics.destination.subscriptions import parse_subscriptions

ACTION = "addContactToXmd"
SUBSCRIPTIONS = {
    s.name: s
    for s in parse_subscriptions({"subscriptions": [
        {"name": "Contacts", "actionSlug": ACTION, "trigger": 'type = "identify"',
         "mapping": {"directoryId": "POOL_1"}},
        {"name": "Transactions", "actionSlug": "upsertContactTransaction", "trigger": 'type = "track"',
         "mapping": {"directoryId": "POOL_1", "mailingListId": "CG_1"}},
    ]}, environ={})
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class FakeExecutor:
    """Answers with the errors queued per Segment messageId; records what it was asked to do."""

    def __init__(self) -> None:
        self.errors: dict[str, list[DestinationError]] = {}
        self.calls: list[list[tuple[str, bool]]] = []
        self.seen: list[QueuedWork] = []
        self.crash_at: str | None = None   # Segment messageId whose work raises an unexpected exception

    def fail(self, message_id: str, *errors: DestinationError) -> None:
        self.errors.setdefault(message_id, []).extend(errors)

    def execute(self, deliveries: Sequence[QueuedWork], progress: Progress | None = None
                ) -> dict[str, DestinationError]:
        progress = progress or Progress()
        self.calls.append([(d.message.message_id, d.recovering) for d in deliveries])
        self.seen.extend(deliveries)
        out = {}
        for d in deliveries:
            if not progress.can_call():
                break
            d.sent = True
            if self.crash_at == d.message.message_id:
                raise RuntimeError("executor bug")
            queued = self.errors.get(d.message.message_id)
            if queued:
                out[d.sqs_message_id] = queued.pop(0)
            else:
                progress.delivered(d)
        return out

    @property
    def executed(self) -> list[str]:
        return [message_id for call in self.calls for message_id, _ in call]


class FakeDeadLetterQueue:
    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.sent: list[tuple[str, dict[str, dict[str, str]]]] = []

    def send(self, body: str, attributes: dict[str, dict[str, str]]) -> None:
        if self.broken:
            raise ConnectionError("DLQ unreachable")
        if problem := sqs_entry_problem(body, attributes):   # as SQS would refuse it (moto does not check all)
            raise ValueError(f"InvalidMessageContents: {problem}")
        self.sent.append((body, attributes))

    def reasons(self) -> list[dict[str, str]]:
        return [{k: v["StringValue"] for k, v in attributes.items()} for _, attributes in self.sent]


class FakeVisibility:
    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.delays: list[tuple[str, int]] = []

    def delay(self, receipt_handle: str, seconds: int) -> None:
        if self.broken:
            raise ConnectionError("SQS unreachable")
        self.delays.append((receipt_handle, seconds))


class Setup:
    def __init__(self, *, dlq_broken: bool = False, visibility_broken: bool = False, max_attempts: int = 5):
        self.clock = Clock()
        self.store = MemoryIdempotencyStore(clock=self.clock)
        self.executor = FakeExecutor()
        self.dlq = FakeDeadLetterQueue(broken=dlq_broken)
        self.visibility = FakeVisibility(broken=visibility_broken)
        self.outcomes: list[tuple[str, str, str | None]] = []
        self.worker = Worker(
            action=ACTION, subscriptions=SUBSCRIPTIONS, executor=self.executor, store=self.store,
            dead_letters=self.dlq, visibility=self.visibility,
            retry=RetryPolicy(max_attempts=max_attempts, base_seconds=30, cap_seconds=900, jitter=lambda: 1.0),
            lease_seconds=60, on_outcome=self._record,
        )

    def _record(self, outcome: str, delivery: QueuedWork, error: DestinationError | None) -> None:
        self.outcomes.append((outcome, delivery.sqs_message_id, error.code if error else None))

    def process(self, *deliveries: QueuedWork):
        return self.worker.process(list(deliveries))


def message(message_id: str = "seg-1", *, action: str = ACTION, subscription: str = "Contacts",
            event: dict | None = None) -> QueueMessage:
    event = event if event is not None else {"type": "identify", "messageId": message_id, "userId": "user-1",
                                             "traits": {"email": "ada@example.com"}}
    return QueueMessage(action, subscription, message_id, "2024-01-01T00:00:00Z", event)


def delivery(msg: QueueMessage | str = "seg-1", *, attempt: int = 1, sqs_message_id: str | None = None) -> QueuedWork:
    text = msg if isinstance(msg, str) else msg.to_json()
    rid = sqs_message_id or f"sqs-{msg.message_id if isinstance(msg, QueueMessage) else 'raw'}-{attempt}"
    return QueuedWork(sqs_message_id=rid, receipt_handle=f"rh-{rid}", body=text, attempt=attempt)


# --- outcomes -------------------------------------------------------------------------------------

def test_a_delivered_message():
    s = Setup()
    report = s.process(delivery(message("seg-1")))
    assert [d.sqs_message_id for d in report.delivered] == ["sqs-seg-1-1"]
    assert report.failure_ids == [] and report.dead_lettered == [] and report.retried == []
    assert s.executor.calls == [[("seg-1", False)]]
    assert s.dlq.sent == [] and s.visibility.delays == []
    assert s.outcomes == [("delivered", "sqs-seg-1-1", None)]


def test_the_executor_gets_the_built_payload_and_subscription():
    s = Setup()
    s.process(delivery(message("seg-1")))
    [d] = s.executor.seen
    assert d.subscription is SUBSCRIPTIONS["Contacts"]
    assert d.payload.directoryId == "POOL_1" and d.payload.email == "ada@example.com"


def test_one_executor_call_for_the_whole_batch():
    s = Setup()
    report = s.process(*(delivery(message(f"seg-{i}")) for i in range(3)))
    assert len(s.executor.calls) == 1 and s.executor.executed == ["seg-0", "seg-1", "seg-2"]
    assert len(report.delivered) == 3


def test_a_permanent_error_goes_to_the_dlq_at_once_with_its_reason():
    s = Setup()
    s.executor.fail("seg-1", PermanentError("qualtrics_rejected", "Qualtrics answered 400: Invalid directory",
                                            status=400, request_id="req-9"))
    d = delivery(message("seg-1"))
    report = s.process(d)
    assert report.failure_ids == []
    assert [(x.sqs_message_id, e.code) for x, e in report.dead_lettered] == [(d.sqs_message_id, "qualtrics_rejected")]
    assert s.visibility.delays == []
    [(body, _)] = s.dlq.sent
    assert body == d.body   # the original message, so a redrive replays it
    [reason] = s.dlq.reasons()
    assert reason == {
        "errorCode": "qualtrics_rejected", "errorMessage": "Qualtrics answered 400: Invalid directory",
        "errorRetryable": "false", "attempts": "1", "receives": "1", "httpStatus": "400", "qualtricsRequestId": "req-9",
        "action": ACTION, "subscription": "Contacts", "segmentMessageId": "seg-1", "eventType": "identify",
    }
    assert all(v["DataType"] == "String" for _, attrs in s.dlq.sent for v in attrs.values())
    assert s.outcomes == [("dead_lettered", d.sqs_message_id, "qualtrics_rejected")]


def test_a_retryable_error_is_retried_with_a_visibility_delay():
    s = Setup()
    s.executor.fail("seg-1", RetryableError("qualtrics_server_error", "Qualtrics answered 503", status=503))
    earlier_attempts(s, message("seg-1"), 1)
    d = delivery(message("seg-1"), attempt=2)
    report = s.process(d)
    assert report.failure_ids == [d.sqs_message_id]
    assert [(x.sqs_message_id, e.code, seconds) for x, e, seconds in report.retried] == [
        (d.sqs_message_id, "qualtrics_server_error", 60)]
    assert s.visibility.delays == [(d.receipt_handle, 60)]
    assert s.dlq.sent == []


def test_retryable_on_the_last_attempt_goes_to_the_dlq():
    s = Setup(max_attempts=3)
    s.executor.fail("seg-1", RetryableError("qualtrics_timeout", "no answer from Qualtrics in time", status=504))
    earlier_attempts(s, message("seg-1"), 2)
    d = delivery(message("seg-1"), attempt=3)
    report = s.process(d)
    assert report.failure_ids == [] and report.retried == []
    [(_, error)] = report.dead_lettered
    assert error.message == "no answer from Qualtrics in time (gave up after 3 attempts, 3 receives)"
    [reason] = s.dlq.reasons()
    assert reason["errorCode"] == "qualtrics_timeout"
    assert reason["errorMessage"].endswith("(gave up after 3 attempts, 3 receives)")
    assert reason["errorRetryable"] == "true" and reason["attempts"] == "3" and reason["httpStatus"] == "504"
    assert s.visibility.delays == []


def earlier_attempts(s: Setup, msg: QueueMessage, count: int) -> None:
    """Attempts on the key before this one (each claimed it, then failed in a way that may have landed)."""
    for _ in range(count):
        s.store.claim(msg.idempotency_key, 60)
        s.store.release(msg.idempotency_key, uncertain=True)


def test_receives_that_attempted_nothing_are_not_attempts():
    # Receive 4, but the first claim of the key: the earlier receives were deferrals, waits on a busy key or
    # batches that died before its turn. It is attempt 1 and retried.
    s = Setup(max_attempts=3)
    s.worker.max_receives = 6
    s.executor.fail("seg-1", RetryableError("network_error", "down"))
    report = s.process(delivery(message("seg-1"), attempt=4))
    assert [(e.code, seconds) for _, e, seconds in report.retried] == [("network_error", 30)]


def test_a_retryable_error_on_the_last_receive_is_dead_lettered_with_its_reason():
    s = Setup(max_attempts=3)
    s.worker.max_receives = 6
    s.executor.fail("seg-1", RetryableError("network_error", "down"))
    report = s.process(delivery(message("seg-1"), attempt=6))   # SQS would dead-letter it, reason-less, next
    assert report.retried == [] and [e.code for _, e in report.dead_lettered] == ["network_error"]
    assert s.dlq.reasons()[0]["attempts"] == "1" and s.dlq.reasons()[0]["receives"] == "6"


def test_the_attempt_before_the_last_is_still_retried():
    s = Setup(max_attempts=3)
    s.executor.fail("seg-1", RetryableError("network_error", "down"))
    assert s.process(delivery(message("seg-1"), attempt=2)).failure_ids == ["sqs-seg-1-2"]


def test_an_invalid_envelope_goes_to_the_dlq():
    s = Setup()
    d = delivery("this is not an envelope")
    report = s.process(d)
    assert [e.code for _, e in report.dead_lettered] == ["invalid_message"]
    [reason] = s.dlq.reasons()
    assert reason["errorCode"] == "invalid_message" and "not JSON" in reason["errorMessage"]
    assert "segmentMessageId" not in reason
    assert s.executor.calls == [] and report.failure_ids == []


def test_an_unknown_subscription_goes_to_the_dlq():
    s = Setup()
    report = s.process(delivery(message("seg-1", subscription="Deleted since")))
    [(_, error)] = report.dead_lettered
    assert error.code == "unknown_subscription" and "'Deleted since'" in error.message
    assert s.dlq.reasons()[0]["subscription"] == "Deleted since"
    assert s.executor.calls == []


def test_a_subscription_of_another_action_is_unknown_here():
    s = Setup()
    report = s.process(delivery(message("seg-1", subscription="Transactions")))
    assert [e.code for _, e in report.dead_lettered] == ["unknown_subscription"]


def test_a_message_of_another_action_goes_to_the_dlq():
    s = Setup()
    report = s.process(delivery(message("seg-1", action="upsertContactTransaction", subscription="Transactions")))
    [(_, error)] = report.dead_lettered
    assert error.code == "wrong_queue" and "upsertContactTransaction" in error.message
    assert s.executor.calls == []


def test_a_payload_that_does_not_validate_goes_to_the_dlq():
    s = Setup()
    bad = message("seg-1", event={"type": "identify", "messageId": "seg-1", "userId": "u",
                                  "traits": {"email": {"not": "a string"}}})
    report = s.process(bad_delivery := delivery(bad))
    assert [e.code for _, e in report.dead_lettered] == ["invalid_payload"]
    assert "'email'" in s.dlq.reasons()[0]["errorMessage"]
    assert report.failure_ids == [] and s.executor.calls == []
    assert s.store.records == {}   # never claimed: nothing to recover
    assert bad_delivery.message == bad


def test_a_mapping_that_cannot_apply_goes_to_the_dlq_and_spares_the_batch():
    s = Setup()
    [decoding] = parse_subscriptions({"subscriptions": [
        {"name": "Decoding", "actionSlug": ACTION, "trigger": 'type = "identify"',
         "mapping": {"directoryId": "POOL_1",
                     "embeddedData": {"@json": {"mode": "decode", "value": {"@path": "$.traits.blob"}}}}}]},
        environ={})
    s.worker.subscriptions = {**SUBSCRIPTIONS, "Decoding": decoding}
    bad = message("seg-bad", subscription="Decoding",
                  event={"type": "identify", "messageId": "seg-bad", "userId": "u", "traits": {"blob": "{nope"}})
    report = s.process(delivery(bad), delivery(message("seg-1")))
    assert [e.code for _, e in report.dead_lettered] == ["invalid_payload"]
    assert [d.message.message_id for d in report.delivered] == ["seg-1"]
    assert report.failure_ids == []


def test_one_bad_message_does_not_hold_up_the_others():
    s = Setup()
    s.executor.fail("seg-2", RetryableError("network_error", "down"))
    report = s.process(delivery("garbage"), delivery(message("seg-1")), delivery(message("seg-2")),
                       delivery(message("seg-3")))
    assert [d.message.message_id for d in report.delivered] == ["seg-1", "seg-3"]
    assert report.failure_ids == ["sqs-seg-2-1"]
    assert [e.code for _, e in report.dead_lettered] == ["invalid_message"]


def test_a_failing_dlq_leaves_the_message_in_the_failure_ids():
    s = Setup(dlq_broken=True)
    s.executor.fail("seg-1", PermanentError("qualtrics_rejected", "no"))
    d = delivery(message("seg-1"))
    report = s.process(d)
    assert report.failure_ids == [d.sqs_message_id]
    assert report.dead_lettered == []
    assert [x.sqs_message_id for x in report.failed] == [d.sqs_message_id]
    assert s.outcomes == [("dead_letter_failed", d.sqs_message_id, "qualtrics_rejected")]


def test_a_failing_dlq_for_an_invalid_envelope_also_keeps_it():
    s = Setup(dlq_broken=True)
    assert s.process(delivery("garbage", sqs_message_id="r-1")).failure_ids == ["r-1"]


def test_a_failing_visibility_change_still_retries():
    s = Setup(visibility_broken=True)
    s.executor.fail("seg-1", RetryableError("network_error", "down"))
    report = s.process(d := delivery(message("seg-1")))
    assert report.failure_ids == [d.sqs_message_id]


def test_every_message_ends_in_exactly_one_outcome():
    s = Setup(max_attempts=2)
    s.executor.fail("seg-2", RetryableError("network_error", "down"))
    s.executor.fail("seg-3", RetryableError("network_error", "down"))
    s.executor.fail("seg-4", PermanentError("qualtrics_rejected", "no"))
    batch = [delivery(message("seg-1")), delivery(message("seg-2")), delivery(message("seg-3"), attempt=2),
             delivery(message("seg-4")), delivery("garbage")]
    report = s.process(*batch)
    ended = ([d.sqs_message_id for d in report.delivered] + [d.sqs_message_id for d in report.duplicates]
             + [d.sqs_message_id for d, _, _ in report.retried] + [d.sqs_message_id for d, _ in report.dead_lettered]
             + [d.sqs_message_id for d in report.failed])
    assert sorted(ended) == sorted(d.sqs_message_id for d in batch)


# --- idempotency ----------------------------------------------------------------------------------

def test_a_second_delivery_of_the_same_message_is_a_duplicate():
    s = Setup()
    s.process(delivery(message("seg-1"), sqs_message_id="sqs-a"))
    report = s.process(delivery(message("seg-1"), sqs_message_id="sqs-b"))   # Segment re-posted: a new SQS id
    assert [d.sqs_message_id for d in report.duplicates] == ["sqs-b"]
    assert report.delivered == [] and report.failure_ids == []
    assert s.executor.executed == ["seg-1"]
    assert s.outcomes[-1] == ("duplicate", "sqs-b", None)


def test_the_same_event_in_another_subscription_is_not_a_duplicate():
    s = Setup()
    other = dict(SUBSCRIPTIONS)
    other["Contacts copy"] = SUBSCRIPTIONS["Contacts"]
    s.worker.subscriptions = other
    s.process(delivery(message("seg-1")))
    report = s.process(delivery(message("seg-1", subscription="Contacts copy")))
    assert len(report.delivered) == 1 and s.executor.executed == ["seg-1", "seg-1"]


def test_a_permanently_failed_message_is_not_marked_done():
    s = Setup()
    s.executor.fail("seg-1", PermanentError("qualtrics_rejected", "no"))
    s.process(delivery(message("seg-1"), sqs_message_id="sqs-a"))
    report = s.process(delivery(message("seg-1"), sqs_message_id="sqs-b"))   # e.g. a DLQ redrive after a fix
    assert [d.sqs_message_id for d in report.delivered] == ["sqs-b"]
    assert s.executor.calls == [[("seg-1", False)], [("seg-1", False)]]   # fresh: Qualtrics refused it


def test_a_transient_failure_leaves_the_key_recovering_for_the_next_claim():
    s = Setup()
    s.executor.fail("seg-1", RetryableError("qualtrics_timeout", "timeout"))
    s.process(delivery(message("seg-1"), attempt=1))
    report = s.process(delivery(message("seg-1"), attempt=2))
    assert [d.message.message_id for d in report.delivered] == ["seg-1"]
    assert s.executor.calls == [[("seg-1", False)], [("seg-1", True)]]   # the executor checks first
    assert s.process(delivery(message("seg-1"), attempt=3)).duplicates   # and now it is done


def test_a_message_another_worker_holds_is_retried_without_calling_the_executor():
    s = Setup()
    msg = message("seg-1")
    assert s.store.claim(msg.idempotency_key, 60).state is ClaimState.CLAIMED   # another worker
    report = s.process(d := delivery(msg))
    assert [e.code for _, e, _ in report.retried] == ["in_progress"]
    assert report.failure_ids == [d.sqs_message_id] and s.executor.calls == []
    s.clock.now += 61   # that worker's lease ran out: it died
    report = s.process(delivery(msg, attempt=2))
    assert len(report.delivered) == 1 and s.executor.calls == [[("seg-1", True)]]


def test_a_wait_on_a_key_another_worker_holds_is_no_attempt():
    # Its 5th receive (max_attempts 5), but it never attempted anything: the other worker holds the key.
    s = Setup()
    s.worker.max_receives = 8
    msg = message("seg-1")
    s.store.claim(msg.idempotency_key, 600)   # another worker
    report = s.process(delivery(msg, attempt=5))
    assert [e.code for _, e, _ in report.retried] == ["in_progress"] and report.dead_lettered == []
    assert s.dlq.sent == []


def test_a_wait_on_the_last_receive_is_dead_lettered_saying_it_waited():
    s = Setup()
    s.worker.max_receives = 8
    msg = message("seg-1")
    s.store.claim(msg.idempotency_key, 600)
    report = s.process(delivery(msg, attempt=8))   # handed back now, SQS would move it without a reason
    assert report.retried == [] and [e.code for _, e in report.dead_lettered] == ["in_progress"]
    [reason] = s.dlq.reasons()
    assert "waited on that worker until the last receive the queue allows (8 receives)" in reason["errorMessage"]
    assert "gave up" not in reason["errorMessage"] and reason["errorRetryable"] == "true"


def test_the_same_message_twice_in_one_batch_is_executed_once():
    s = Setup()
    report = s.process(delivery(message("seg-1"), sqs_message_id="sqs-a"),
                       delivery(message("seg-1"), sqs_message_id="sqs-b"))
    assert s.executor.executed == ["seg-1"]
    assert [d.sqs_message_id for d in report.delivered] == ["sqs-a"]
    # The copy leaves the queue at once: the first copy carries the event, whatever its outcome.
    assert [d.sqs_message_id for d in report.duplicates] == ["sqs-b"]
    assert report.failure_ids == []


# --- the store itself -----------------------------------------------------------------------------

def test_memory_store_protocol():
    clock = Clock()
    store = MemoryIdempotencyStore(clock=clock)
    first = store.claim("k", 60)
    assert (first.state, first.recovering) == (ClaimState.CLAIMED, False)
    assert store.claim("k", 60).state is ClaimState.BUSY
    clock.now += 61
    expired = store.claim("k", 60)
    assert (expired.state, expired.recovering) == (ClaimState.CLAIMED, True)
    store.release("k", uncertain=False)
    assert store.claim("k", 60) == first
    store.release("k", uncertain=True)
    assert store.claim("k", 60).recovering is True
    store.complete("k")
    clock.now += 10**9
    assert store.claim("k", 60).state is ClaimState.DONE


# --- the retry policy -----------------------------------------------------------------------------

def test_backoff_grows_and_is_capped():
    policy = RetryPolicy(base_seconds=30, cap_seconds=900, jitter=lambda: 1.0)
    error = RetryableError("network_error", "down")
    assert [policy.delay(a, error) for a in (1, 2, 3, 4, 5, 6, 10)] == [30, 60, 120, 240, 480, 900, 900]


def test_jitter_takes_off_at_most_half():
    error = RetryableError("network_error", "down")
    assert RetryPolicy(base_seconds=40, jitter=lambda: 0.0).delay(1, error) == 20
    assert RetryPolicy(base_seconds=40, jitter=lambda: 0.5).delay(1, error) == 30


def test_retry_after_is_honoured():
    policy = RetryPolicy(base_seconds=30, cap_seconds=900, jitter=lambda: 1.0)
    assert policy.delay(1, RetryableError("qualtrics_rate_limited", "slow down", retry_after=120)) == 120
    assert policy.delay(1, RetryableError("qualtrics_rate_limited", "slow down", retry_after=5)) == 30
    assert policy.delay(1, RetryableError("qualtrics_rate_limited", "slow down", retry_after=3600)) == 3600


def test_a_fractional_retry_after_is_never_undercut():
    policy = RetryPolicy(base_seconds=0, jitter=lambda: 0.0)
    assert policy.delay(1, RetryableError("qualtrics_rate_limited", "slow down", retry_after=2.5)) >= 2.5


def test_the_delay_stays_within_sqs_limits():
    policy = RetryPolicy(base_seconds=0, jitter=lambda: 0.0)
    assert policy.delay(1, RetryableError("x", "y")) == 1
    assert policy.delay(1, RetryableError("x", "y", retry_after=10**9)) == MAX_VISIBILITY_SECONDS


def test_the_worker_passes_retry_after_to_the_visibility_delay():
    s = Setup()
    s.executor.fail("seg-1", RetryableError("qualtrics_rate_limited", "slow down", status=429, retry_after=400))
    s.process(d := delivery(message("seg-1")))
    assert s.visibility.delays == [(d.receipt_handle, 400)]


# --- SQS records ----------------------------------------------------------------------------------

def test_delivery_from_an_sqs_record():
    record = {"messageId": "sqs-1", "receiptHandle": "rh-1", "body": message("seg-1").to_json(),
              "attributes": {"ApproximateReceiveCount": "4"},
              "messageAttributes": {"action": {"stringValue": ACTION, "dataType": "String"}}}
    d = QueuedWork.from_sqs_record(record)
    assert (d.sqs_message_id, d.receipt_handle, d.attempt) == ("sqs-1", "rh-1", 4)
    assert json.loads(d.body)["messageId"] == "seg-1"
    assert d.attributes["action"]["stringValue"] == ACTION


@pytest.mark.parametrize("attributes", [{}, None, {"ApproximateReceiveCount": ""}])
def test_a_record_without_a_receive_count_is_a_first_attempt(attributes):
    assert QueuedWork.from_sqs_record({"messageId": "sqs-1", "attributes": attributes}).attempt == 1



# --- one bad record never takes the batch down ------------------------------------------------------

class ClientError(Exception):
    """Shaped like botocore's ClientError (the core matches it by its ``response``, not by import)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"An error occurred ({code}): {message}")
        self.response = {"Error": {"Code": code, "Message": message}}


class PoisonStore(MemoryIdempotencyStore):
    """The real in-memory store, but DynamoDB's answer for some keys is an error."""

    def __init__(self, clock, poisoned: dict[str, Exception], fail_complete: bool = False) -> None:
        super().__init__(clock=clock)
        self.poisoned = poisoned
        self.fail_complete = fail_complete

    def claim(self, key: str, lease_seconds: int):
        for fragment, exc in self.poisoned.items():
            if fragment in key:
                raise exc
        return super().claim(key, lease_seconds)

    def complete(self, key: str) -> None:
        if self.fail_complete:
            raise ClientError("ProvisionedThroughputExceededException")
        super().complete(key)


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


def test_a_store_validation_error_dead_letters_that_record_only():
    s = Setup()
    s.worker.store = PoisonStore(s.clock, {"seg-5": ClientError("ValidationException", "key too long")})
    report = s.process(*(delivery(message(f"seg-{i}")) for i in range(10)))
    assert len(report.delivered) == 9 and report.failure_ids == []
    [(dead, error)] = report.dead_lettered
    assert dead.message.message_id == "seg-5"
    reason = s.dlq.reasons()[0]
    assert reason["errorCode"] == "internal_error" and reason["errorRetryable"] == "false"
    assert "ClientError (ValidationException)" in reason["errorMessage"]


def test_a_throttled_store_retries_that_record_only():
    s = Setup()
    s.worker.store = PoisonStore(s.clock, {"seg-2": ClientError("ProvisionedThroughputExceededException")})
    report = s.process(*(delivery(message(f"seg-{i}")) for i in range(3)))
    assert len(report.delivered) == 2 and report.dead_lettered == []
    assert [(d.message.message_id, e.code) for d, e, _ in report.retried] == [("seg-2", "internal_error")]


def embedding_subscription() -> dict:
    [embedding] = parse_subscriptions({"subscriptions": [
        {"name": "Embedding", "actionSlug": ACTION, "trigger": 'type = "identify"',
         "mapping": {"directoryId": "POOL_1", "embeddedData": {"@path": "$.traits"}}}]}, environ={})
    return {**SUBSCRIPTIONS, "Embedding": embedding}


@pytest.mark.parametrize("depth", [100, 5000, 100_000])
def test_an_event_nested_too_deep_is_dead_lettered_and_spares_the_batch(depth):
    s = Setup()
    s.worker.subscriptions = embedding_subscription()
    event = {"type": "identify", "messageId": "seg-deep", "userId": "u", "traits": {"email": "a@example.com"}}
    body = message("seg-deep", subscription="Embedding", event=event).to_json()
    body = body.replace('"email":"a@example.com"', '"email":"a@example.com","x":' + '{"a":' * depth + '1' + '}' * depth)
    batch = [delivery(message(f"seg-{i}")) for i in range(9)]
    report = s.process(*batch[:4], delivery(body, sqs_message_id="deep"), *batch[4:])
    assert len(report.delivered) == 9 and report.failure_ids == []
    [(dead, error)] = report.dead_lettered
    assert dead.sqs_message_id == "deep" and not error.retryable
    assert error.code in ("invalid_message", "invalid_payload") and "deep" in error.message


def test_an_event_at_the_depth_limit_is_delivered():
    from segment_qualtrics.segment.mapping_kit import MAX_VALUE_DEPTH

    s = Setup()
    s.worker.subscriptions = embedding_subscription()
    event = {"type": "identify", "messageId": "seg-ok", "userId": "u",
             "traits": {"email": "a@example.com", "x": nested(MAX_VALUE_DEPTH - 4)}}
    report = s.process(delivery(message("seg-ok", subscription="Embedding", event=event)))
    assert len(report.delivered) == 1, report.dead_lettered


def test_an_executor_bug_fails_the_unsettled_records_as_internal_errors():
    s = Setup()
    s.executor.crash_at = "seg-2"
    report = s.process(*(delivery(message(f"seg-{i}")) for i in range(4)))
    assert [d.message.message_id for d in report.delivered] == ["seg-0", "seg-1"]   # done before the crash
    assert {d.message.message_id for d, _ in report.dead_lettered} == {"seg-2", "seg-3"}
    assert all(e.code == "internal_error" and "RuntimeError" in e.message for _, e in report.dead_lettered)
    # Its call may have landed: the keys stay uncertain, so a redrive checks before acting again.
    assert s.store.claim(message("seg-2").idempotency_key, 60).recovering


def test_a_failing_outcome_hook_changes_no_outcome():
    s = Setup()

    def broken(*_):
        raise ValueError("log sink down")

    s.worker.on_outcome = broken
    assert len(s.process(delivery(message("seg-1"))).delivered) == 1


def test_a_failed_completion_still_counts_as_delivered():
    s = Setup()
    s.worker.store = PoisonStore(s.clock, {}, fail_complete=True)
    report = s.process(delivery(message("seg-1")))
    assert len(report.delivered) == 1 and report.failure_ids == [] and s.dlq.sent == []
    assert ("complete_failed", "sqs-seg-1-1", "internal_error") in s.outcomes


@pytest.mark.parametrize(("exc", "retryable"), [
    (ClientError("ValidationException"), False),
    (ClientError("ThrottlingException"), True),
    (ClientError("ProvisionedThroughputExceededException"), True),
    (ClientError("InternalServerError"), True),
    (ConnectionResetError("reset"), True),
    (TimeoutError("slow"), True),
    (RecursionError("maximum recursion depth exceeded"), False),
    (TypeError("unhashable"), False),
    (KeyError("x"), False),
    (MemoryError(), False),
])
def test_unexpected_errors_are_classified(exc, retryable):
    error = internal_error(exc)
    assert error.code == "internal_error" and error.retryable is retryable
    assert type(exc).__name__ in error.message


def test_botocore_connection_errors_are_transient():
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    for exc in (EndpointConnectionError(endpoint_url="http://x"), ConnectTimeoutError(endpoint_url="http://x"),
                ReadTimeoutError(endpoint_url="http://x")):
        assert internal_error(exc).retryable, exc


def test_a_real_botocore_validation_error_is_permanent():
    from botocore.exceptions import ClientError as BotoClientError

    exc = BotoClientError({"Error": {"Code": "ValidationException", "Message": "Hash key too big"}}, "PutItem")
    error = internal_error(exc)
    assert not error.retryable and "ClientError (ValidationException)" in error.message


# --- completion per message and the time budget -----------------------------------------------------

class DoneRecorder(MemoryIdempotencyStore):
    def __init__(self, clock, executor: FakeExecutor) -> None:
        super().__init__(clock=clock)
        self.executor = executor
        self.completed_after: list[tuple[str, int]] = []

    def complete(self, key: str) -> None:
        self.completed_after.append((key.rsplit("/", 1)[-1], len(self.executor.seen)))
        super().complete(key)


def test_each_message_is_marked_done_as_soon_as_its_call_succeeds():
    s = Setup()
    s.executor.crash_at = "seg-3"   # the invocation dies part-way (here: a bug; in life a timeout)
    s.process(*(delivery(message(f"seg-{i}")) for i in range(5)))
    # A redelivery of the whole batch runs only what had not landed.
    s.executor.crash_at = None
    report = s.process(*(delivery(message(f"seg-{i}"), attempt=2) for i in range(5)))
    assert {d.message.message_id for d in report.duplicates} == {"seg-0", "seg-1", "seg-2"}


def test_completion_happens_before_the_next_call():
    s = Setup()
    order: list[str] = []
    store = s.store
    original = store.complete
    store.complete = lambda key: (order.append("complete " + key.rsplit(":", 1)[-1]), original(key))[1]
    real = s.executor.execute

    def execute(deliveries, progress=None):
        inner = Progress(lambda d: (order.append("call " + d.message.message_id), progress.delivered(d)))
        return real(deliveries, inner)

    s.executor.execute = execute
    s.process(delivery(message("seg-1")), delivery(message("seg-2")))
    assert [o.split()[0] for o in order] == ["call", "complete", "call", "complete"]


class Countdown:
    """Seconds left in the invocation: each call to the executor's can_call spends ``per_call``."""

    def __init__(self, start: float, per_call: float) -> None:
        self.left = start
        self.per_call = per_call

    def __call__(self) -> float:
        left = self.left
        self.left -= self.per_call
        return left


def test_no_call_starts_that_cannot_finish_before_the_timeout():
    s = Setup()
    # Asked once before the batch (30: room for a call), then before each call but the first: 20, 10, 0...
    s.worker.remaining_seconds = Countdown(start=30, per_call=10)
    s.worker.call_seconds = 16
    report = s.process(*(delivery(message(f"seg-{i}")) for i in range(4)))
    assert [d.message.message_id for d in report.delivered] == ["seg-0", "seg-1"]
    assert [d.message.message_id for d in report.deferred] == ["seg-2", "seg-3"]
    assert report.failure_ids == ["sqs-seg-2-1", "sqs-seg-3-1"]
    assert report.dead_lettered == [] and report.retried == []
    assert s.visibility.delays == [("rh-sqs-seg-2-1", 0), ("rh-sqs-seg-3-1", 0)]   # back at once, no backoff
    # Their keys were released: the next receive is a fresh attempt, not a recovering one.
    s.worker.remaining_seconds = None
    report = s.process(delivery(message("seg-2"), attempt=2))
    assert s.executor.calls[-1] == [("seg-2", False)] and len(report.delivered) == 1


def test_a_deferred_recovering_message_stays_uncertain():
    s = Setup()
    s.executor.fail("seg-1", RetryableError("qualtrics_timeout", "timeout"))
    s.process(delivery(message("seg-1")))
    s.worker.remaining_seconds = Countdown(start=20, per_call=10)
    s.worker.call_seconds = 16
    report = s.process(delivery(message("seg-0")), delivery(message("seg-1"), attempt=2))
    assert [d.message.message_id for d in report.deferred] == ["seg-1"]
    assert s.store.claim(message("seg-1").idempotency_key, 60).recovering


def test_a_deferral_on_the_last_receive_dead_letters_with_a_reason():
    s = Setup()
    s.worker.remaining_seconds = Countdown(start=20, per_call=10)
    s.worker.call_seconds = 16
    s.worker.max_receives = 8
    report = s.process(delivery(message("seg-0")), delivery(message("seg-1"), attempt=8))
    assert report.deferred == [] and [e.code for _, e in report.dead_lettered] == ["out_of_time"]


def test_the_first_call_of_an_invocation_always_starts():
    s = Setup()
    s.worker.remaining_seconds = Countdown(start=16, per_call=15)   # room at the start; the claims took it
    s.worker.call_seconds = 16
    report = s.process(delivery(message("seg-0")), delivery(message("seg-1")))
    assert [d.message.message_id for d in report.delivered] == ["seg-0"]
    assert [d.message.message_id for d in report.deferred] == ["seg-1"]


def test_little_time_left_after_the_claims_starts_only_the_first_call():
    # The invocation started with 30 s; the claims left 16.0 s, just under one call's 16.05 s. The rule must
    # apply (only the first call starts), not switch off as if the function's timeout were that short.
    s = Setup()
    s.worker.call_seconds = 16.05
    s.worker.invocation_seconds = 30.0
    s.worker.remaining_seconds = lambda: 16.0 - 13.05 * sum(d.sent for d in s.executor.seen)
    report = s.process(*(delivery(message(f"seg-{i}")) for i in range(10)))
    assert [d.message.message_id for d in report.delivered] == ["seg-0"]
    assert len(report.deferred) == 9 and sum(d.sent for d in s.executor.seen) == 1


def test_a_timeout_shorter_than_one_call_leaves_the_batch_to_lambdas_own_timeout():
    s = Setup()
    s.worker.remaining_seconds = lambda: 2.0   # e.g. a test function with a 2 s timeout: no endless deferral
    s.worker.call_seconds = 16
    report = s.process(delivery(message("seg-0")), delivery(message("seg-1")))
    assert len(report.delivered) == 2 and report.deferred == []


# --- "may have landed": when the key stays uncertain ----------------------------------------------------

def test_a_permanent_error_while_recovering_keeps_the_key_uncertain():
    s = Setup()
    s.executor.fail("seg-1", RetryableError("qualtrics_timeout", "timeout"),
                    PermanentError("qualtrics_rejected", "400", status=400))
    s.process(delivery(message("seg-1")))
    report = s.process(delivery(message("seg-1"), attempt=2))   # recovering; Qualtrics refuses this call
    assert [e.code for _, e in report.dead_lettered] == ["qualtrics_rejected"]
    # The first attempt may have landed and nothing proved otherwise: a redrive must check first.
    s.process(delivery(message("seg-1"), sqs_message_id="redrive"))
    assert s.executor.calls[-1] == [("seg-1", True)]


def test_may_have_landed():
    d = QueuedWork("r", "rh", "{}", 1)
    refused = PermanentError("qualtrics_rejected", "400", status=400)
    assert may_have_landed(d, RetryableError("qualtrics_timeout", "t"))
    assert not may_have_landed(d, refused)
    d.recovering = True
    assert may_have_landed(d, refused)
    d.checked_absent = True
    assert not may_have_landed(d, refused)
    d.sent = True
    assert may_have_landed(d, internal_error(TypeError("reading the answer")))


def test_a_dead_letters_reason_is_sent_whatever_characters_the_message_and_error_hold():
    """Attributes carry values from the message and the error text: SQS refuses a whole send for one
    character it does not take (U+FFFE, a lone surrogate) or an empty value; a refused DLQ send would leave
    the message to SQS's own reason-less redrive."""
    s = Setup()
    odd = "id\ufffe\ud800" + "x" * 3000
    msg = QueueMessage(ACTION, "Contacts", odd, "2024-01-01T00:00:00Z",
                       {"type": "identify\uffff", "messageId": odd, "userId": "u"})
    body = json.dumps({"version": 1, "action": ACTION, "subscription": "Contacts", "messageId": odd,
                       "receivedAt": "2024-01-01T00:00:00Z", "event": msg.event})   # \u escapes: SQS takes it
    s.executor.fail(odd, PermanentError("qualtrics_rejected", "Qualtrics refused \ufffe\ud800 in a field"))
    report = s.worker.process([QueuedWork("r1", "rh-1", body, 1)])
    [(dead, error)] = report.dead_lettered
    [reason] = s.dlq.reasons()
    assert reason["errorCode"] == error.code and reason["segmentMessageId"].startswith("id\ufffd\ufffd")
    assert all(len(value) <= 1024 for value in reason.values())


# --- hand-made messages with fields of another type -------------------------------------------------

_EVENT = {"type": "identify", "messageId": "x", "userId": "u", "traits": {"email": "a@b.c"}}


@pytest.mark.parametrize("fields", [
    {"subscription": "Nope", "messageId": 12345},
    {"subscription": "Nope", "messageId": {"a": 1}},
    {"action": [ACTION]},
    {"subscription": ["Contacts"]},
    {"subscription": 7},
])
@pytest.mark.parametrize("position", [0, 5, 9])
def test_a_field_of_another_type_is_dead_lettered_with_a_reason_and_spares_the_batch(fields, position):
    s = Setup()
    body = {"version": 1, "action": ACTION, "subscription": "Contacts", "messageId": "m", "event": _EVENT, **fields}
    batch = [delivery(message(f"good-{i}")) for i in range(9)]
    batch.insert(position, delivery(json.dumps(body), sqs_message_id="poison", attempt=8))
    s.worker.max_receives = 8
    report = s.process(*batch)
    assert len(report.delivered) == 9 and report.failure_ids == []
    [(dead, error)] = report.dead_lettered
    assert dead.sqs_message_id == "poison" and error.code == "invalid_message" and "not a string" in error.message
    [reason] = s.dlq.reasons()
    assert reason["errorCode"] == "invalid_message" and "not a string" in reason["errorMessage"]


def test_dead_letter_attributes_take_values_of_any_type():
    from segment_qualtrics.delivery.worker import dead_letter_attributes

    d = delivery(message("m"))
    d.message = QueueMessage(ACTION, ["Contacts"], 12345, "", {"type": {"odd": 1}})   # as an older check let by
    attributes = dead_letter_attributes(d, PermanentError("unknown_subscription", "x"))
    assert attributes["segmentMessageId"]["StringValue"] == "12345"
    assert attributes["subscription"]["StringValue"] == "['Contacts']"


# --- the Qualtrics secret cannot be read ---------------------------------------------------------------

def test_an_unreachable_secrets_manager_retries_the_batch_rather_than_dead_lettering_it():
    # Real botocore against a local port nothing listens on (a Secrets Manager outage): Powertools wraps the
    # connection error in GetParameterError, which used to end as a permanent internal_error for every message.
    import socket

    import boto3
    from aws_lambda_powertools.utilities.parameters import SecretsProvider
    from segment_qualtrics.adapters.qualtrics import QualtricsClient
    from segment_qualtrics.delivery.executors import AddContactExecutor
    from segment_qualtrics.runtime.worker_app import SECRETS_CONFIG, secret_credentials

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    secrets = boto3.client("secretsmanager", endpoint_url=f"http://127.0.0.1:{closed}", region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="x", config=SECRETS_CONFIG)
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:q"
    events: list[str] = []
    secrets.meta.events.register("before-call.secrets-manager.GetSecretValue", lambda **_: events.append("read"))
    s = Setup()
    s.worker.executor = AddContactExecutor(QualtricsClient(secret_credentials(SecretsProvider(boto3_client=secrets),
                                                                              arn)))
    report = s.process(*(delivery(message(f"m-{i}")) for i in range(3)))
    assert report.dead_lettered == [] and s.dlq.sent == []
    assert [e.code for _, e, _ in report.retried] == ["qualtrics_secret_unavailable"] * 3
    assert all("EndpointConnectionError" in e.message for _, e, _ in report.retried)
    assert len(events) == 1   # one failed read answered for the whole batch: no message waits out the timeouts again


# --- a mapping that would build more text than any event holds ---------------------------------------------

def test_a_template_that_would_outgrow_the_cap_is_dead_lettered_quickly_and_spares_the_batch():
    # The review's event: a note of "{{properties.pad}}" x 10,000 and a pad of 10,000 characters. It used to be
    # expanded again (100 MB; about 950 MB at the event limit: an out-of-memory kill of the whole batch). Now
    # the note is inserted as it is; a template that would still pass MAX_TEXT_CHARS is an invalid payload.
    [template_subscription] = parse_subscriptions({"subscriptions": [
        {"name": "Notes", "actionSlug": ACTION, "trigger": 'type = "identify"',
         "mapping": {"directoryId": "POOL_1", "email": {"@path": "$.traits.email"},
                     "embeddedData": {"note": {"@template": "Note: {{{properties.note}}} / {{{properties.note}}}"}}}},
    ]}, environ={})
    s = Setup()
    s.worker.subscriptions = {**SUBSCRIPTIONS, "Notes": template_subscription}
    note = "{{properties.pad}}" * 10_000
    event = {"type": "identify", "messageId": "big", "userId": "u", "traits": {"email": "a@b.c"},
             "properties": {"note": note, "pad": "x" * 10_000}}
    small = dict(event, messageId="small", properties={"note": "{{properties.pad}}", "pad": "x"})
    report = s.process(delivery(message("big", subscription="Notes", event=event)),
                       delivery(message("small", subscription="Notes", event=small)),
                       delivery(message("seg-1")))
    assert sorted(d.message.message_id for d in report.delivered) == ["seg-1", "small"]
    [small_delivery] = [d for d in s.executor.seen if d.message.message_id == "small"]
    assert small_delivery.payload.embeddedData == {"note": "Note: {{properties.pad}} / {{properties.pad}}"}
    [(dead, error)] = report.dead_lettered
    assert dead.message.message_id == "big" and error.code == "invalid_payload"
    assert "@template: the rendered text would be longer than 262144 characters" in error.message


def test_the_observer_reports_what_each_batch_added_to_the_executors_contact_cache():
    from segment_qualtrics.delivery.transactions import ContactCache
    from segment_qualtrics.runtime.observability import metrics
    from segment_qualtrics.runtime.worker_app import WorkerObserver

    observer = WorkerObserver("upsertContactTransaction")
    observer.contact_cache = cache = ContactCache()
    cache.put(("POOL_1", "a"), "CID_1")

    def total(name: str) -> float:
        value = metrics.metric_set[name]["Value"]
        return sum(value) if isinstance(value, list) else value

    def one_batch(lookups: list[str]) -> tuple[float, float]:
        metrics.clear_metrics()
        observer.begin()
        for key in lookups:
            cache.get(("POOL_1", key))
        observer.end(len(lookups))
        totals = (total("ContactLookups"), total("ContactCacheHits"))
        metrics.clear_metrics()
        return totals

    assert one_batch(["a", "b", "a"]) == (3, 2)
    assert one_batch(["b"]) == (1, 0)   # only what this batch added, though the counters live on


def test_the_partial_batch_response_names_the_failed_records_in_their_order():
    from segment_qualtrics.runtime.worker_app import partial_batch_response

    records = [{"messageId": "r1"}, {"messageId": "r2"}, {"messageId": "r3"}, {"messageId": ["odd"]}, "junk", {}]
    assert partial_batch_response(records, {"r3", "r1"}) == {
        "batchItemFailures": [{"itemIdentifier": "r1"}, {"itemIdentifier": "r3"}]}
    assert partial_batch_response(records, set()) == {"batchItemFailures": []}
    assert partial_batch_response([], {"r1"}) == {"batchItemFailures": []}
