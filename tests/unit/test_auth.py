"""Ingest authentication: batch signatures off by default, requireBoth, rotation with a grace period (ingest.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws
from segment_qualtrics.destination.subscriptions import parse_subscriptions
from segment_qualtrics.ingest.core import (
    ECHO_LIMIT,
    MAX_EVENT_BYTES,
    IngestCredentials,
    IngestRequest,
    Rejection,
    authenticate,
    handle_ingest,
)
from segment_qualtrics.runtime.ingest_app import IngestApp
from segment_qualtrics.runtime.observability import Metric, MetricBatch
from segment_qualtrics.runtime.settings import IngestSettings

SECRET, OLD_SECRET = "new-shared-secret", "old-shared-secret"
TOKEN, OLD_TOKEN = "new-bearer-token", "old-bearer-token"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
IDENTIFY = {"type": "identify", "messageId": "m-1", "userId": "u-1", "traits": {"email": "ada@example.com"}}
INJECTED = {"type": "identify", "messageId": "m-evil", "userId": "mallory", "traits": {"email": "m@evil.test"}}
SUBSCRIPTIONS = parse_subscriptions({"subscriptions": [
    {"name": "Contacts", "actionSlug": "addContactToXmd", "trigger": 'type = "identify"',
     "mapping": {"directoryId": "POOL_1"}}]}, environ={})


class Publisher:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def publish(self, action, messages):
        self.ids += [m.message_id for m in messages]
        return []


def sign(data: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), data, hashlib.sha1).hexdigest()


def request(body: bytes, **headers: str) -> IngestRequest:
    return IngestRequest({"content-type": "application/json", **headers}, body)


def code(response) -> str | None:
    return None if response is None else response.body["error"]["code"]


def replayed_batch() -> tuple[bytes, str]:
    """A batch signed as Webhooks (Actions) does (first element only) with an attacker's event appended."""
    first = json.dumps(IDENTIFY, separators=(",", ":"))
    return f"[{first},{json.dumps(INJECTED)}]".encode(), sign(first.encode())


# --- the batch first-element signature ------------------------------------------------------------

def test_a_replayed_batch_with_an_injected_event_is_refused_by_default():
    body, signature = replayed_batch()
    publisher = Publisher()
    response = handle_ingest(request(body, **{"x-signature": signature}), SUBSCRIPTIONS,
                             IngestCredentials(SECRET), publisher, now=NOW)
    assert (response.status, code(response)) == (401, "bad_signature")
    assert publisher.ids == []


def test_the_first_element_signature_is_accepted_only_when_switched_on():
    body, signature = replayed_batch()
    publisher = Publisher()
    response = handle_ingest(request(body, **{"x-signature": signature}), SUBSCRIPTIONS,
                             IngestCredentials(SECRET, batch_first_element=True), publisher, now=NOW)
    assert response.status == 200
    assert publisher.ids == ["m-1", "m-evil"]   # what the switch gives up: the rest of the batch is unsigned


def test_a_batch_signed_over_its_whole_body_is_accepted_by_default():
    body = json.dumps([IDENTIFY, INJECTED]).encode()
    assert authenticate(request(body, **{"x-signature": sign(body)}), IngestCredentials(SECRET)) is None


@pytest.mark.parametrize(("value", "on"), [(None, False), ("false", False), ("true", True)])
def test_the_setting_reaches_the_credentials(value, on):
    environ = {"INGEST_SECRET_ARN": "arn"} | ({} if value is None else {"ACCEPT_BATCH_FIRST_ELEMENT_SIGNATURE": value})
    settings = IngestSettings.from_environ(environ)
    assert settings.ACCEPT_BATCH_FIRST_ELEMENT_SIGNATURE is on
    credentials = IngestCredentials.from_secret({"sharedSecret": SECRET},
                                                batch_first_element=settings.ACCEPT_BATCH_FIRST_ELEMENT_SIGNATURE)
    body, signature = replayed_batch()
    assert (authenticate(request(body, **{"x-signature": signature}), credentials) is None) is on


# --- requireBoth ----------------------------------------------------------------------------------

BOTH = IngestCredentials.from_secret({"sharedSecret": SECRET, "bearerToken": TOKEN, "requireBoth": True})


def test_require_both_is_read_from_the_secret_and_only_as_true():
    assert BOTH.require_both
    assert not IngestCredentials.from_secret({"sharedSecret": SECRET, "bearerToken": TOKEN, "requireBoth": "yes"}
                                             ).require_both


def test_require_both_accepts_a_request_with_both():
    body = json.dumps(IDENTIFY).encode()
    assert authenticate(request(body, **{"x-signature": sign(body), "authorization": f"Bearer {TOKEN}"}), BOTH) is None


@pytest.mark.parametrize(("headers", "expected"), [
    ({"x-signature": "S"}, "unauthenticated"),
    ({"authorization": f"Bearer {TOKEN}"}, "unauthenticated"),
    ({}, "unauthenticated"),
    ({"x-signature": "S", "authorization": "Bearer wrong"}, "bad_token"),
    ({"x-signature": "0" * 40, "authorization": f"Bearer {TOKEN}"}, "bad_signature"),
])
def test_require_both_refuses_a_request_missing_or_failing_either(headers, expected):
    body = json.dumps(IDENTIFY).encode()
    headers = {k: sign(body) if v == "S" else v for k, v in headers.items()}
    response = authenticate(request(body, **headers), BOTH)
    assert (response.status, code(response)) == (401, expected)
    if expected == "unauthenticated":
        assert "an X-Signature header and an Authorization: Bearer header" in response.body["error"]["message"]


def test_without_require_both_a_good_signature_is_enough_even_next_to_a_wrong_token():
    body = json.dumps(IDENTIFY).encode()
    either = IngestCredentials(SECRET, TOKEN)
    assert authenticate(request(body, **{"x-signature": sign(body), "authorization": "Bearer wrong"}), either) is None


def test_require_both_with_only_one_value_configured_is_a_500_not_an_open_door():
    response = authenticate(request(b"{}"), IngestCredentials.from_secret({"sharedSecret": SECRET,
                                                                           "requireBoth": True}))
    assert (response.status, code(response)) == (500, "auth_not_configured")


# --- rotation -------------------------------------------------------------------------------------

def rotating(until: str | None) -> IngestCredentials:
    value = {"sharedSecret": SECRET, "previousSharedSecret": OLD_SECRET,
             "bearerToken": TOKEN, "previousBearerToken": OLD_TOKEN}
    return IngestCredentials.from_secret(value | ({} if until is None else {"previousValidUntil": until}))


def by_signature(secret: str) -> IngestRequest:
    body = json.dumps(IDENTIFY).encode()
    return request(body, **{"x-signature": sign(body, secret)})


def by_token(token: str) -> IngestRequest:
    return request(json.dumps(IDENTIFY).encode(), authorization=f"Bearer {token}")


@pytest.mark.parametrize("make", [lambda new_or_old: by_signature(new_or_old[0]),
                                  lambda new_or_old: by_token(new_or_old[1])], ids=["signature", "bearer"])
def test_during_the_grace_both_the_old_and_the_new_value_are_accepted(make):
    credentials = rotating("2026-12-07T13:00:00Z")
    assert authenticate(make((SECRET, TOKEN)), credentials, NOW) is None
    assert authenticate(make((OLD_SECRET, OLD_TOKEN)), credentials, NOW) is None


@pytest.mark.parametrize(("make", "expected"), [(lambda v: by_signature(v[0]), "bad_signature"),
                                                (lambda v: by_token(v[1]), "bad_token")], ids=["signature", "bearer"])
def test_after_the_grace_the_old_value_is_refused_and_the_new_one_still_accepted(make, expected):
    credentials = rotating("2026-12-07T11:59:59+00:00")
    assert authenticate(make((SECRET, TOKEN)), credentials, NOW) is None
    response = authenticate(make((OLD_SECRET, OLD_TOKEN)), credentials, NOW)
    assert (response.status, code(response)) == (401, expected)


def test_the_grace_ends_exactly_at_previous_valid_until():
    credentials = rotating(NOW.isoformat())
    assert code(authenticate(by_signature(OLD_SECRET), credentials, NOW)) == "bad_signature"
    assert authenticate(by_signature(OLD_SECRET), credentials, NOW - timedelta(microseconds=1)) is None


def test_without_an_end_the_previous_value_is_accepted_until_removed():
    assert authenticate(by_signature(OLD_SECRET), rotating(None), NOW + timedelta(days=365)) is None
    removed = IngestCredentials.from_secret({"sharedSecret": SECRET})
    assert code(authenticate(by_signature(OLD_SECRET), removed, NOW)) == "bad_signature"


@pytest.mark.parametrize("until", ["tomorrow", "2026-12-31T00:00:00", "", 1765000000, "9" * 10_000])
def test_an_unreadable_or_zoneless_end_refuses_the_previous_value(until):
    credentials = rotating(until)
    assert code(authenticate(by_signature(OLD_SECRET), credentials, NOW)) == "bad_signature"
    assert authenticate(by_signature(SECRET), credentials, NOW) is None


def test_a_previous_value_alone_authenticates_nothing():
    credentials = IngestCredentials.from_secret({"previousSharedSecret": OLD_SECRET})
    assert code(authenticate(by_signature(OLD_SECRET), credentials, NOW)) == "auth_not_configured"


@pytest.mark.parametrize("value", [[], "text", None, {"sharedSecret": 12345}, {"sharedSecret": ["a"]}])
def test_a_secret_of_the_wrong_shape_is_a_500_not_a_crash(value):
    response = authenticate(by_signature(SECRET), IngestCredentials.from_secret(value))
    assert (response.status, code(response)) == (500, "auth_not_configured")


def test_the_contract_shapes_stay_valid():
    assert IngestCredentials.from_secret({"sharedSecret": SECRET}) == IngestCredentials(SECRET)
    assert IngestCredentials.from_secret({"bearerToken": TOKEN}) == IngestCredentials(None, TOKEN)


# --- what an error message echoes -----------------------------------------------------------------

def test_a_huge_content_type_is_echoed_cut_short():
    content_type = "text/plain;" + "x" * 100_000
    response = handle_ingest(IngestRequest({"content-type": content_type}, b"{}"), SUBSCRIPTIONS,
                             IngestCredentials(SECRET), Publisher(), now=NOW)
    message = response.body["error"]["message"]
    assert response.status == 415
    assert len(message) < ECHO_LIMIT + 100
    assert message.endswith("... (100011 characters)") and "text/plain;xxx" in message


def test_a_short_content_type_is_echoed_whole():
    response = handle_ingest(IngestRequest({"content-type": "text/plain"}, b"{}"), SUBSCRIPTIONS,
                             IngestCredentials(SECRET), Publisher(), now=NOW)
    assert response.body["error"]["message"] == "Content-Type must be application/json, got 'text/plain'"


@pytest.mark.parametrize("body", [b'["\\udfff"]', b"[" * 20_000 + b"]" * 20_000, b'[{"a": "\\ud800"}, 1]'])
def test_a_hostile_batch_with_the_switch_on_is_a_401_not_a_500(body):
    credentials = IngestCredentials(SECRET, batch_first_element=True)
    response = handle_ingest(request(body, **{"x-signature": "0" * 40}), SUBSCRIPTIONS, credentials, Publisher(),
                             now=NOW)
    assert (response.status, code(response)) == (401, "bad_signature")


# --- the ingest secret as read by the function (Powertools over an in-process moto Secrets Manager) --------

@pytest.fixture
def secrets(monkeypatch):
    for name, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "POWERTOOLS_METRICS_NAMESPACE": "test"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    parameters.clear_caches()
    with mock_aws():
        yield boto3.client("secretsmanager")
    parameters.clear_caches()


def app_answer(arn: str, caplog) -> tuple[int, dict, list]:
    body = json.dumps({"type": "identify", "userId": "u"}).encode()
    event = {"headers": {"content-type": "application/json", "x-signature": sign(body)}, "body": body.decode()}
    with caplog.at_level("ERROR"):
        answer = IngestApp(IngestSettings(INGEST_SECRET_ARN=arn), [], publisher=None).handle(event)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    return answer["statusCode"], json.loads(answer["body"])["error"], errors


@pytest.mark.parametrize("value", ["the-bare-shared-secret-pasted-in", '"a JSON string"', "[1, 2]", "{not json"])
def test_a_secret_that_is_not_a_json_object_is_our_500_naming_the_shape_not_the_value(secrets, caplog, value):
    arn = secrets.create_secret(Name="ingest", SecretString=value)["ARN"]
    status, error, errors = app_answer(arn, caplog)
    assert (status, error["code"]) == (500, "auth_not_configured")
    assert '{"sharedSecret": "..."}' in error["message"] and value not in error["message"]
    assert len(errors) == 1 and value not in errors[0].getMessage() + str(errors[0].__dict__)


def test_a_secret_that_cannot_be_read_is_a_503_segment_retries(secrets, caplog):
    arn = secrets.create_secret(Name="ingest", SecretString=json.dumps({"sharedSecret": SECRET}))["ARN"]
    secrets.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    status, error, errors = app_answer(arn, caplog)
    assert (status, error["code"]) == (503, "secret_unavailable")
    assert len(errors) == 1 and "ResourceNotFoundException" in errors[0].__dict__["cause"]


def test_a_good_secret_read_by_the_function_authenticates(secrets, caplog):
    arn = secrets.create_secret(Name="ingest", SecretString=json.dumps({"sharedSecret": SECRET}))["ARN"]
    body = b'{"type":"identify","userId":"u"}'
    answer = IngestApp(IngestSettings(INGEST_SECRET_ARN=arn), [], publisher=None).handle(
        {"headers": {"content-type": "application/json", "x-signature": sign(body, "wrong")}, "body": body.decode()})
    assert (answer["statusCode"], json.loads(answer["body"])["error"]["code"]) == (401, "bad_signature")


# --- the EventsRejected metric's reason ----------------------------------------------------------

def rejected_reasons(arn: str, body: bytes) -> tuple[int, list[tuple[str, float]]]:
    blobs: list[tuple[dict[str, str], dict]] = []
    app = IngestApp(IngestSettings(INGEST_SECRET_ARN=arn), SUBSCRIPTIONS, publisher=Publisher(),
                    batch=MetricBatch(emit=lambda dimensions, values: blobs.append((dimensions, values))))
    answer = app.handle({"headers": {"content-type": "application/json", "x-signature": sign(body)},
                         "body": body.decode()})
    reasons = [(d["reason"], v[Metric.EVENTS_REJECTED][0]) for d, v in blobs if Metric.EVENTS_REJECTED in v]
    return answer["statusCode"], sorted(reasons)


def test_the_rejection_reason_is_a_code_the_core_gives_not_a_match_on_the_error_text(secrets):
    arn = secrets.create_secret(Name="ingest", SecretString=json.dumps({"sharedSecret": SECRET}))["ARN"]
    too_large = {**IDENTIFY, "traits": {"note": "x" * MAX_EVENT_BYTES}}
    # One event, too large: a 400 invalid_event whose metric still says why (it said invalid_event).
    assert rejected_reasons(arn, json.dumps(too_large).encode()) == (400, [("event_too_large", 1)])
    # A batch: one too large, one invalid, one accepted.
    batch = json.dumps([too_large, {"type": "nope"}, IDENTIFY]).encode()
    assert rejected_reasons(arn, batch) == (200, [("event_too_large", 1), ("invalid_event", 1)])
    # An invalid event whose text says "larger than" is not counted as too large.
    tricky = json.dumps({"type": "larger than", "userId": "u"}).encode()   # quoted in the error text
    status, reasons = rejected_reasons(arn, tricky)
    assert reasons == [("invalid_event", 1)], (status, reasons)


def test_the_core_lists_one_rejection_code_per_invalid_event():
    body = json.dumps([{"type": "nope"}, IDENTIFY, {**IDENTIFY, "traits": {"x": "y" * MAX_EVENT_BYTES}}]).encode()
    response = handle_ingest(request(body, **{"x-signature": sign(body)}), SUBSCRIPTIONS, IngestCredentials(SECRET),
                             Publisher(), now=NOW)
    assert response.status == 200
    assert [entry["index"] for entry in response.body["invalid"]] == [0, 2]
    assert response.rejected == [Rejection.INVALID_EVENT, Rejection.EVENT_TOO_LARGE]
    assert "rejected" not in response.to_http_api_response()["body"]
