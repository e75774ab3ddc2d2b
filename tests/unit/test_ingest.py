"""The ingest core: authentication, limits, parsing, validation, routing and enqueueing (ingest.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from segment_qualtrics.destination.envelope import QueueMessage
from segment_qualtrics.destination.subscriptions import parse_subscriptions
from segment_qualtrics.ingest.core import (
    MAX_BODY_BYTES,
    IngestCredentials,
    IngestRequest,
    _utc_now_text,
    authenticate,
    handle_ingest,
    route,
    signature_matches,
)

SECRET = "shared-secret"
TOKEN = "bearer-token-1"
NOW = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)

CONFIG = {
    "subscriptions": [
        {"name": "Contacts", "actionSlug": "addContactToXmd", "trigger": 'type = "identify"',
         "mapping": {"directoryId": "POOL_1"}},
        {"name": "Transactions", "actionSlug": "upsertContactTransaction",
         "trigger": 'type = "track" and event = "Transaction Created"',
         "mapping": {"directoryId": "POOL_1", "mailingListId": "CG_1"}},
        {"name": "Every track", "actionSlug": "triggerXflowWorkflow", "trigger": 'type = "track"',
         "mapping": {"workflowUrl": "https://sjc1.qualtrics.com/workflow"}},
        {"name": "Switched off", "enabled": False, "actionSlug": "addContactToXmd", "trigger": 'type = "identify"',
         "mapping": {"directoryId": "POOL_2"}},
    ]
}
SUBSCRIPTIONS = parse_subscriptions(CONFIG, environ={})

IDENTIFY = {"type": "identify", "messageId": "m-identify", "userId": "user-1", "anonymousId": None,
            "traits": {"email": "ada@example.com"}, "integrations": {}, "timestamp": "2024-05-06T07:08:00+00:00"}
TRANSACTION = {"type": "track", "messageId": "m-transaction", "event": "Transaction Created", "userId": "user-1",
               "properties": {"total": 10}, "timestamp": "2024-05-06T07:08:00.000Z"}
PAGE = {"type": "page", "messageId": "m-page", "anonymousId": "anon-1"}


class FakePublisher:
    """Records what it is given; refuses the messageIds in ``refuse``."""

    def __init__(self, refuse: Sequence[str] = ()) -> None:
        self.refuse = set(refuse)
        self.calls: list[tuple[str, list[QueueMessage]]] = []

    def publish(self, action: str, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        self.calls.append((action, list(messages)))
        return [m for m in messages if m.message_id in self.refuse]

    @property
    def published(self) -> list[tuple[str, str, str]]:
        return sorted((a, m.subscription, m.message_id) for a, ms in self.calls for m in ms)


def sign(data: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), data, hashlib.sha1).hexdigest()


def signed(payload, *, content_type: str | None = "application/json", raw: bytes | None = None) -> IngestRequest:
    data = raw if raw is not None else json.dumps(payload).encode()
    headers = {"x-signature": sign(data)}
    if content_type is not None:
        headers["content-type"] = content_type
    return IngestRequest(headers, data)


SIGNED_ONLY = IngestCredentials(shared_secret=SECRET)


def ingest(request: IngestRequest, publisher: FakePublisher | None = None,
           credentials: IngestCredentials = SIGNED_ONLY):
    return handle_ingest(request, SUBSCRIPTIONS, credentials, publisher or FakePublisher(), now=NOW)


# --- signatures -----------------------------------------------------------------------------------

def test_a_signature_over_the_raw_body_matches():
    data = b'{"type": "identify",   "userId": "u"}'   # not re-serialised: the raw bytes count
    assert signature_matches(SECRET, data, sign(data))


def test_a_wrong_signature_or_secret_does_not_match():
    data = json.dumps(IDENTIFY).encode()
    assert not signature_matches(SECRET, data, sign(data, "other-secret"))
    assert not signature_matches(SECRET, data, sign(data + b" "))
    assert not signature_matches(SECRET, data, "")


def test_an_uppercase_hex_signature_matches():
    data = json.dumps(IDENTIFY).encode()
    assert signature_matches(SECRET, data, sign(data).upper())
    assert signature_matches(SECRET, data, f"  {sign(data)} ")


def test_a_webhooks_actions_batch_is_signed_over_its_first_element_only():
    events = [IDENTIFY, TRANSACTION]
    data = json.dumps(events, separators=(",", ":")).encode()
    first = json.dumps(events[0], separators=(",", ":")).encode()
    assert signature_matches(SECRET, data, sign(first), batch_first_element=True)
    assert not signature_matches(SECRET, data, sign(json.dumps(events[1], separators=(",", ":")).encode()),
                                 batch_first_element=True)


def test_a_batch_signature_uses_the_first_elements_text_as_javascript_wrote_it():
    # JSON.stringify writes 0.00001 and 1e-7; Python's json.dumps would write 1e-05 and 1e-07.
    first = '{"type":"track","event":"Rate","userId":"u","properties":{"rate":0.00001,"tiny":1e-7,"name":"Zoë"}}'
    data = f"[{first},{json.dumps(IDENTIFY, separators=(',', ':'))}]".encode()
    assert signature_matches(SECRET, data, sign(first.encode()), batch_first_element=True)


def test_a_batch_with_non_ascii_text_is_signed_as_utf8_without_escapes():
    events = [{**IDENTIFY, "traits": {"name": "Zoë Åström"}}]
    data = json.dumps(events, separators=(",", ":"), ensure_ascii=False).encode()
    assert signature_matches(SECRET, data, sign(json.dumps(events[0], separators=(",", ":"),
                                                          ensure_ascii=False).encode()), batch_first_element=True)


@pytest.mark.parametrize("data", [b"[]", b"[", b"[\xff]", b"[,1]"])
def test_broken_arrays_do_not_match_and_do_not_raise(data):
    assert not signature_matches(SECRET, data, sign(b"1"), batch_first_element=True)


def test_a_batch_broken_after_its_signed_first_element_is_still_a_400():
    first = json.dumps(IDENTIFY, separators=(",", ":"))
    data = f"[{first},{{oops".encode()
    request = IngestRequest({"content-type": "application/json", "x-signature": sign(first.encode())}, data)
    response = ingest(request, credentials=IngestCredentials(SECRET, batch_first_element=True))
    assert (response.status, response.body["error"]["code"]) == (400, "invalid_json")


# --- authentication -------------------------------------------------------------------------------

def test_nothing_configured_is_a_500_auth_not_configured():
    response = ingest(signed(IDENTIFY), credentials=IngestCredentials())
    assert response.status == 500
    assert response.body["error"]["code"] == "auth_not_configured"


def test_credentials_from_the_secret_treat_empty_values_as_absent():
    assert IngestCredentials.from_secret({"sharedSecret": "", "bearerToken": ""}) == IngestCredentials()
    assert IngestCredentials.from_secret({"sharedSecret": "s", "other": 1}) == IngestCredentials("s", None)
    assert IngestCredentials.from_secret({"bearerToken": "t"}) == IngestCredentials(None, "t")


def test_a_valid_signature_is_accepted():
    assert authenticate(signed(IDENTIFY), IngestCredentials(shared_secret=SECRET)) is None


def test_a_wrong_signature_is_a_401():
    request = signed(IDENTIFY)
    request.headers["x-signature"] = sign(request.body, "not-the-secret")
    response = ingest(request)
    assert response.status == 401
    assert response.body["error"]["code"] == "bad_signature"
    assert "X-Signature" in response.body["error"]["message"]


def test_a_non_ascii_signature_is_a_401_not_a_crash():
    request = signed(IDENTIFY)
    request.headers["x-signature"] = "é" * 40
    assert ingest(request).status == 401


def test_a_bearer_token_is_accepted():
    data = json.dumps(IDENTIFY).encode()
    for value in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer  {TOKEN} "):
        request = IngestRequest({"content-type": "application/json", "authorization": value}, data)
        response = ingest(request, credentials=IngestCredentials(bearer_token=TOKEN))
        assert response.status == 200, value


@pytest.mark.parametrize("value", ["Bearer wrong", f"Basic {TOKEN}", "Bearer", "Bearer é"])
def test_a_wrong_bearer_token_is_a_401(value):
    request = IngestRequest({"content-type": "application/json", "authorization": value},
                            json.dumps(IDENTIFY).encode())
    response = ingest(request, credentials=IngestCredentials(bearer_token=TOKEN))
    assert response.status == 401
    assert response.body["error"]["code"] == "bad_token"


def test_either_method_works_when_both_are_configured():
    both = IngestCredentials(shared_secret=SECRET, bearer_token=TOKEN)
    data = json.dumps(IDENTIFY).encode()
    assert authenticate(signed(IDENTIFY), both) is None
    assert authenticate(IngestRequest({"authorization": f"Bearer {TOKEN}"}, data), both) is None


@pytest.mark.parametrize(
    ("credentials", "needed", "not_needed"),
    [
        (IngestCredentials(shared_secret=SECRET), ["X-Signature"], ["Bearer"]),
        (IngestCredentials(bearer_token=TOKEN), ["Authorization: Bearer"], ["X-Signature"]),
        (IngestCredentials(SECRET, TOKEN), ["X-Signature", "Authorization: Bearer"], []),
    ],
)
def test_missing_authentication_is_a_401_naming_what_is_needed(credentials, needed, not_needed):
    request = IngestRequest({"content-type": "application/json"}, json.dumps(IDENTIFY).encode())
    response = ingest(request, credentials=credentials)
    assert response.status == 401
    assert response.body["error"]["code"] == "unauthenticated"
    for name in needed:
        assert name in response.body["error"]["message"]
    for name in not_needed:
        assert name not in response.body["error"]["message"]


def test_a_signature_is_not_accepted_when_only_a_bearer_token_is_configured():
    response = ingest(signed(IDENTIFY), credentials=IngestCredentials(bearer_token=TOKEN))
    assert response.status == 401


# --- limits and content type ----------------------------------------------------------------------

def test_a_body_above_the_limit_is_a_413():
    response = ingest(signed(None, raw=b" " * (MAX_BODY_BYTES + 1)))
    assert response.status == 413
    assert response.body["error"]["code"] == "payload_too_large"
    assert str(MAX_BODY_BYTES) in response.body["error"]["message"]


def test_a_body_at_the_limit_is_not_a_413():
    data = json.dumps(IDENTIFY).encode()
    response = ingest(signed(None, raw=data + b" " * (MAX_BODY_BYTES - len(data))))
    assert response.status == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None, ""])
def test_a_wrong_or_missing_content_type_is_a_415(content_type):
    response = ingest(signed(IDENTIFY, content_type=content_type))
    assert response.status == 415
    assert response.body["error"]["code"] == "unsupported_media_type"
    assert "application/json" in response.body["error"]["message"]


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON", "application/vnd.segment+json"])
def test_json_content_types_are_accepted(content_type):
    assert ingest(signed(IDENTIFY, content_type=content_type)).status == 200


# --- bad input ------------------------------------------------------------------------------------

def test_a_body_that_is_not_json_is_a_400():
    response = ingest(signed(None, raw=b"{not json"))
    assert response.status == 400
    assert response.body["error"]["code"] == "invalid_json"


def test_an_empty_batch_is_a_400():
    response = ingest(signed({"batch": []}))
    assert (response.status, response.body["error"]["code"]) == (400, "empty_batch")


def test_a_single_invalid_event_is_a_400_with_its_reason():
    publisher = FakePublisher()
    response = ingest(signed({"type": "identify", "userId": None, "anonymousId": None}), publisher)
    assert response.status == 400
    assert response.body["error"]["code"] == "invalid_event"
    assert "userId" in response.body["error"]["message"]
    assert publisher.calls == []


def test_a_batch_where_every_event_is_invalid_is_a_400_listing_each_by_index():
    publisher = FakePublisher()
    batch = [{"type": "purchase", "userId": "u", "messageId": "bad-1"}, {"type": "track", "userId": "u"}, 7]
    response = ingest(signed(batch), publisher)
    assert response.status == 400
    error = response.body["error"]
    assert error["code"] == "invalid_batch"
    assert [entry["index"] for entry in error["invalid"]] == [0, 1, 2]
    assert error["invalid"][0]["messageId"] == "bad-1"
    assert "purchase" in error["invalid"][0]["error"]
    assert "event" in error["invalid"][1]["error"]
    assert "JSON object" in error["invalid"][2]["error"]
    assert publisher.calls == []


def test_a_batch_with_one_invalid_event_is_a_200_listing_it():
    publisher = FakePublisher()
    batch = [IDENTIFY, {"type": "track", "messageId": "bad-2", "userId": "u"}, TRANSACTION]
    response = ingest(signed({"batch": batch}), publisher)
    assert response.status == 200
    assert response.body["accepted"] == 2
    assert response.body["invalid"] == [{"index": 1, "error": 'a track event needs an "event" name',
                                         "messageId": "bad-2"}]
    assert "bad-2" not in {m for _, _, m in publisher.published}


def test_an_error_body_is_json_with_code_and_message():
    http = ingest(signed(None, raw=b"[]")).to_http_api_response()
    assert http["statusCode"] == 400
    assert http["headers"]["content-type"] == "application/json"
    error = json.loads(http["body"])["error"]
    assert set(error) >= {"code", "message"}


# --- routing --------------------------------------------------------------------------------------

def test_one_message_per_enabled_subscription_and_matching_event():
    publisher = FakePublisher()
    response = ingest(signed([IDENTIFY, TRANSACTION, PAGE]), publisher)
    assert response.status == 200
    assert publisher.published == [
        ("addContactToXmd", "Contacts", "m-identify"),
        ("triggerXflowWorkflow", "Every track", "m-transaction"),
        ("upsertContactTransaction", "Transactions", "m-transaction"),
    ]
    assert response.body == {"accepted": 3, "invalid": [],
                             "queued": {"addContactToXmd": 1, "triggerXflowWorkflow": 1,
                                        "upsertContactTransaction": 1}}
    assert sorted(m.message_id for m in response.queued) == ["m-identify", "m-transaction", "m-transaction"]


def test_one_publish_call_per_action():
    publisher = FakePublisher()
    second = {**IDENTIFY, "messageId": "m-identify-2", "userId": "user-2"}
    ingest(signed([IDENTIFY, second]), publisher)
    assert [(action, [m.message_id for m in messages]) for action, messages in publisher.calls] == [
        ("addContactToXmd", ["m-identify", "m-identify-2"])]


def test_disabled_subscriptions_are_skipped():
    publisher = FakePublisher()
    ingest(signed(IDENTIFY), publisher)
    assert "Switched off" not in {s for _, s, _ in publisher.published}


def test_an_event_no_subscription_wants_is_accepted_and_not_queued():
    publisher = FakePublisher()
    response = ingest(signed({"type": "delete", "userId": "user-1", "messageId": "del-1"}), publisher)
    assert response.status == 200
    assert response.body["accepted"] == 1 and response.body["queued"] == {}
    assert publisher.published == []


def test_messages_carry_the_event_subscription_and_receive_time():
    publisher = FakePublisher()
    ingest(signed(IDENTIFY), publisher)
    [(_, [message])] = publisher.calls
    assert message.action == "addContactToXmd"
    assert message.subscription == "Contacts"
    assert message.message_id == "m-identify"
    assert message.received_at == "2024-05-06T07:08:09.123000Z"
    assert message.event == IDENTIFY


def test_an_event_without_a_message_id_gets_the_same_derived_one_on_redelivery():
    event = {k: v for k, v in IDENTIFY.items() if k != "messageId"}
    first, second = FakePublisher(), FakePublisher()
    ingest(signed(event), first)
    ingest(signed(event), second)
    [(_, [one])], [(_, [two])] = first.calls, second.calls
    assert one.message_id.startswith("derived-")
    assert one.message_id == two.message_id == one.event["messageId"]


def test_route_is_one_message_per_matching_enabled_subscription():
    event = {**TRANSACTION}
    messages = route(event, SUBSCRIPTIONS, "2024-01-01T00:00:00Z")
    assert sorted((m.action, m.subscription) for m in messages) == [
        ("triggerXflowWorkflow", "Every track"), ("upsertContactTransaction", "Transactions")]
    assert route(PAGE, SUBSCRIPTIONS, "2024-01-01T00:00:00Z") == []


# --- the queue refusing messages -------------------------------------------------------------------

def test_a_publisher_refusing_messages_is_a_503_naming_them():
    publisher = FakePublisher(refuse={"m-transaction"})
    response = ingest(signed([IDENTIFY, TRANSACTION]), publisher)
    assert response.status == 503
    error = response.body["error"]
    assert error["code"] == "queue_unavailable"
    assert error["messageIds"] == ["m-transaction"]
    assert "2 message(s)" in error["message"]   # both of its actions refused it
    assert response.queued == []


def test_a_publisher_accepting_everything_is_a_200():
    publisher = FakePublisher(refuse={"not-in-this-request"})
    assert ingest(signed([IDENTIFY, TRANSACTION]), publisher).status == 200


# --- the HTTP API event ---------------------------------------------------------------------------

def test_from_http_api_event_lowercases_headers_and_keeps_the_body():
    request = IngestRequest.from_http_api_event(
        {"headers": {"Content-Type": "application/json", "X-Signature": "abc"}, "body": '{"a":"ü"}',
         "isBase64Encoded": False})
    assert request.headers == {"content-type": "application/json", "x-signature": "abc"}
    assert request.body == '{"a":"ü"}'.encode()


def test_from_http_api_event_decodes_base64_bodies():
    raw = json.dumps(IDENTIFY).encode()
    request = IngestRequest.from_http_api_event(
        {"headers": {"content-type": "application/json"}, "body": base64.b64encode(raw).decode(),
         "isBase64Encoded": True})
    assert request.body == raw
    assert signature_matches(SECRET, request.body, sign(raw))


def test_from_http_api_event_without_body_or_headers():
    request = IngestRequest.from_http_api_event({})
    assert (request.headers, request.body) == ({}, b"")


def test_a_base64_request_goes_all_the_way_through():
    raw = json.dumps(IDENTIFY).encode()
    event = {"headers": {"Content-Type": "application/json", "X-Signature": sign(raw)},
             "body": base64.b64encode(raw).decode(), "isBase64Encoded": True}
    publisher = FakePublisher()
    response = ingest(IngestRequest.from_http_api_event(event), publisher)
    assert response.status == 200
    assert publisher.published == [("addContactToXmd", "Contacts", "m-identify")]


def test_received_at_is_now_in_utc_with_microseconds(monkeypatch):
    before = datetime.now(UTC)
    text = _utc_now_text()
    after = datetime.now(UTC)
    assert len(text) == 27 and text.endswith("Z")
    assert before.replace(microsecond=0) <= datetime.fromisoformat(text) <= after
    # The formatted second is reused within a second and replaced in the next one.
    second = 1_780_000_000
    monkeypatch.setattr(time, "time_ns", lambda: second * 10**9 + 999_999_999)
    assert _utc_now_text() == "2026-05-28T20:26:40.999999Z"
    monkeypatch.setattr(time, "time_ns", lambda: (second + 1) * 10**9 + 1_000)
    assert _utc_now_text() == "2026-05-28T20:26:41.000001Z"
    monkeypatch.setattr(time, "time_ns", lambda: (second - 86_400) * 10**9)
    assert _utc_now_text() == "2026-05-27T20:26:40.000000Z"
