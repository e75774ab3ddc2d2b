"""Hostile bodies and headers through the real ingest (handle_ingest, the SQS publisher adapter, the HTTP API
event and answer): whatever comes in, what holds.

- no exception leaves the handler, and no answer is a 5xx (SQS is up here: a 503 would mean we built a
  message SQS refuses);
- every 4xx is our JSON error ``{"error": {"code", "message"}}``;
- every message sent passes SQS's rules (characters, non-empty attributes, size: ``sqs_entry_problem``),
  is strict JSON (no NaN or Infinity), reads back with ``QueueMessage.from_json`` into an event that
  ``validate_event`` accepts, nests at most MAX_EVENT_DEPTH, and has an idempotency key DynamoDB takes.

The normal run tries a few hundred bodies in seconds; ``INGEST_FUZZ_EXAMPLES=20000`` (``make fuzz``) tries more.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from segment_qualtrics.adapters.aws import SqsPublisher
from segment_qualtrics.destination.envelope import QueueMessage, sqs_entry_problem
from segment_qualtrics.destination.subscriptions import parse_subscriptions
from segment_qualtrics.ingest.core import MAX_BODY_BYTES, IngestCredentials, IngestRequest, Router, handle_ingest
from segment_qualtrics.segment.events import MAX_EVENT_DEPTH, event_depth, validate_event

EXAMPLES = int(os.environ.get("INGEST_FUZZ_EXAMPLES", "300"))
SECRET = "fuzz-secret"
TOKEN = "fuzz-token"
# The batch first-element signature switched on: the widest authentication path, fuzzed too.
CREDENTIALS = IngestCredentials(shared_secret=SECRET, bearer_token=TOKEN, batch_first_element=True)
ROUTER = Router(parse_subscriptions({"subscriptions": [
    {"name": "Contacts", "actionSlug": "addContactToXmd", "trigger": 'type = "identify"',
     "mapping": {"directoryId": "POOL_1"}},
    {"name": "Every event \ufffd \u00e9", "actionSlug": "triggerXflowWorkflow", "trigger": "userId != null",
     "mapping": {"workflowUrl": "https://iad1.qualtrics.com/w"}},
    {"name": "Anonymous", "actionSlug": "upsertContactTransaction", "trigger": "anonymousId != null",
     "mapping": {"directoryId": "POOL_1", "mailingListId": "CG_1"}},
]}, environ={}))
QUEUES = {slug: f"https://sqs.local/queue/{slug}"
          for slug in ("addContactToXmd", "triggerXflowWorkflow", "upsertContactTransaction")}


class RuleCheckingSqs:
    """SendMessageBatch as SQS answers it: an entry that breaks SQS's rules fails with SenderFault (the whole
    request fails when an entry id repeats or there are more than 10). Records what it accepted."""

    def __init__(self) -> None:
        self.accepted: list[dict] = []
        self.refused: list[tuple[str, str]] = []

    def send_message_batch(self, QueueUrl, Entries):  # noqa: N803  (boto3's parameter names)
        assert QueueUrl in QUEUES.values() and 1 <= len(Entries) <= 10
        assert len({e["Id"] for e in Entries}) == len(Entries)
        ok, failed = [], []
        for entry in Entries:
            problem = sqs_entry_problem(entry["MessageBody"], entry["MessageAttributes"])
            if problem:
                self.refused.append((entry["MessageBody"][:200], problem))
                failed.append({"Id": entry["Id"], "SenderFault": True, "Code": "InvalidMessageContents"})
            else:
                self.accepted.append(entry)
                ok.append({"Id": entry["Id"], "MessageId": "sqs-" + entry["Id"]})
        return {"Successful": ok, "Failed": failed}


# --- nasty JSON, as text ----------------------------------------------------------------------------

_SCALARS = [
    "null", "true", "false", "0", "-0", "1", "-1", "1.5", "1e400", "-1e400", "1E+999", "1e-400", "5e-324",
    "NaN", "Infinity", "-Infinity", "nan", "12345678901234567890123456789", "9" * 400, "9" * 5000,
    "1." + "0" * 400, "0.1e309", '""', '"x"', r'"\ud800"', r'"\udfff"', r'"a\ud83d"', r'"\ud83d\ude00"',
    '"\ufffe"', '"\uffff"', r'"\ufffe"', r'"\uffff"', r'"\u0000"', '"\x01"', r'"\u001f"', '"\u2028\u2029"',
    '"\U0001fffe"', r'"\\"', r'"\""', '"[[[{{{"', '"]]]}}}"', '"\\', "[", "]", "{", "}", ",", ":", "01", "1.",
    ".5", "+1", "0x10", "'x'", '"identify"', '"track"', '"2026-01-01T00:00:00Z"', '"2026-13-45T99:99:99Z"',
    # past a double's range with no 3-digit exponent, or far from it in text only
    "1" + "0" * 300 + "e9", "9" * 300 + ".9e99", "9" * 308 + "." + "9" * 308 + "e9", "-1" + "0" * 308,
    "17976931348623159" + "0" * 292, "17976931348623157" + "0" * 292, "0." + "0" * 400 + "1e400", "1e0000309",
    '"code e2024"', '"' + "9" * 400 + '"',
]
_FIELDS = ["type", "messageId", "userId", "anonymousId", "event", "groupId", "previousId", "timestamp",
           "originalTimestamp", "sentAt", "receivedAt", "properties", "traits", "context", "integrations"]


def _string(rng: random.Random, size: int) -> str:
    alphabet = ["a", "é", "\u00e9", "\ufffd", "\U0001f600", " ", '"', "\\", "\ufffe", "\uffff", "\t"]
    return json.dumps("".join(rng.choice(alphabet) for _ in range(size)), ensure_ascii=rng.random() < 0.5)


def _value(rng: random.Random, depth: int) -> str:
    roll = rng.random()
    if depth > 0 and roll < 0.15:
        return "[" + ",".join(_value(rng, depth - 1) for _ in range(rng.randint(0, 3))) + "]"
    if depth > 0 and roll < 0.3:
        keys = [rng.choice(_FIELDS + ["a", "a", "", "\ufffe", "\\ud800"]) for _ in range(rng.randint(0, 3))]
        return "{" + ",".join(f'{json.dumps(k)}:{_value(rng, depth - 1)}' for k in keys) + "}"
    if roll < 0.35:
        return _string(rng, rng.choice([1, 10, 300, 1100, 3000]))
    if roll < 0.4:   # nesting at, around and far past the limit
        n = rng.choice([MAX_EVENT_DEPTH - 2, MAX_EVENT_DEPTH - 1, MAX_EVENT_DEPTH, MAX_EVENT_DEPTH + 1, 200, 1000,
                        20_000])
        inner, outer = rng.choice([("[", "]"), ('{"a":', "}")])
        return inner * n + rng.choice(["1", "NaN", '"\\ud800"']) + outer * n
    if roll < 0.45:
        return _number(rng)
    return rng.choice(_SCALARS)


def _number(rng: random.Random) -> str:
    """A JSON number of any spelling around where a double runs out: sign, integer digits (no leading zero),
    fraction, exponent (e or E, a sign, leading zeros)."""
    def digits() -> str:
        return "".join(rng.choice("0123456789") for _ in range(rng.choice([1, 2, 17, 200, 209, 210, 300, 309, 400])))
    integer = "0" if rng.random() < 0.2 else rng.choice("123456789") + digits()[1:]
    text = rng.choice(["", "-"]) + integer
    if rng.random() < 0.4:
        text += "." + digits()
    if rng.random() < 0.6:
        power = rng.choice([0, 9, 99, 100, 99 + 209, 308, 309, 400, rng.randrange(1000)])
        text += rng.choice("eE") + rng.choice(["", "+", "-"]) + "0" * rng.choice([0, 0, 1, 3]) + str(power)
    return text


def _event(rng: random.Random) -> str:
    fields = {"type": json.dumps(rng.choice(["identify", "track", "page", "group", "alias", "delete", "x"])),
              "userId": '"u-1"', "event": '"Order Completed"', "groupId": '"g"', "previousId": '"p"'}
    if rng.random() < 0.8:
        long_id = json.dumps("m" * rng.choice([1023, 1024, 1025, 3000]))
        fields["messageId"] = rng.choice(['"m-1"', '"m-2"', '"m-3"', '"ajs-next-0f"', long_id,
                                          '"m\\ufffe"', '"m\\ud800"', '"m\\u0001"', '"m\\t"', '""', "1", "null"])
    for _ in range(rng.choice([0, 0, 1, 1, 2, 4])):   # wrong or hostile values at any field
        fields[rng.choice(_FIELDS)] = _value(rng, rng.randint(0, 3))
    items = [f"{json.dumps(k)}:{v}" for k, v in fields.items()]
    if rng.random() < 0.1:
        items.append(f'"type":{_value(rng, 1)}')   # a duplicate key: the last one wins
    return "{" + ",".join(items) + "}"


def nasty_body(seed: int) -> bytes:
    rng = random.Random(seed)
    events = [_event(rng) for _ in range(rng.choice([1, 1, 2, 3, 10]))]
    shape = rng.random()
    if shape < 0.4:
        text = events[0]
    elif shape < 0.7:
        text = "[" + ",".join(events) + "]"
    elif shape < 0.85:
        text = '{"batch":[' + ",".join(events) + "]}"
    elif shape < 0.9:
        text = "[" + ",".join(['{"type":"page","anonymousId":"a"}'] * rng.choice([4999, 5000, 5001, 20_000])) + "]"
    else:
        text = _value(rng, 3)
    data = text.encode("utf-8", "surrogatepass")
    roll = rng.random()
    if roll < 0.05:
        data = b"\xef\xbb\xbf" + data
    elif roll < 0.08:
        data = text.encode("utf-16")
    elif roll < 0.15 and data:   # broken: cut, or a byte changed
        cut = rng.randrange(len(data))
        data = data[:cut] if rng.random() < 0.5 else data[:cut] + bytes([rng.randrange(256)]) + data[cut + 1:]
    return data


def _headers(rng: random.Random, body: bytes) -> dict[str, str]:
    headers = {"Content-Type": rng.choice(["application/json"] * 6 + [
        "application/json; charset=utf-8", "application/vnd.segment+json", "text/plain", "", "application/\u00e9"])}
    auth = rng.random()
    if auth < 0.75:
        headers["X-Signature"] = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    elif auth < 0.85:
        headers["Authorization"] = rng.choice([f"Bearer {TOKEN}", "Bearer \u00e9", "Basic x", "Bearer"])
    elif auth < 0.95:
        headers["x-signature"] = rng.choice(["", "zz", "\u00e9" * 40, "0" * 40])
    return headers


# --- the invariants -----------------------------------------------------------------------------------

def _strict_loads(text: str):
    def refuse(name):
        raise AssertionError(f"{name} in a queued message")

    def finite(number: str) -> str:   # a number that reads as inf (1e309) is not one a worker can use
        assert math.isfinite(float(number)), f"{number[:40]}... reads as an infinite double"
        return number
    return json.loads(text, parse_constant=refuse, parse_float=finite, parse_int=finite)


def check_request(body: bytes, headers: dict[str, str], *, base64_body: bool = False) -> dict:
    """One request through from_http_api_event, handle_ingest and the SQS adapter; asserts the invariants."""
    sqs = RuleCheckingSqs()
    publisher = SqsPublisher(sqs, QUEUES, sleep=lambda _: None)
    try:   # as API Gateway hands it over: text when it is UTF-8, else base64
        text = None if base64_body else body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    api_event = {"headers": headers, "isBase64Encoded": text is None,
                 "body": base64.b64encode(body).decode() if text is None else text}
    response = handle_ingest(IngestRequest.from_http_api_event(api_event), ROUTER, CREDENTIALS, publisher)
    answer = response.to_http_api_response()

    assert sqs.refused == [], sqs.refused
    assert response.status < 500, response.body
    assert answer["headers"] == {"content-type": "application/json"}
    payload = json.loads(answer["body"])
    assert len(answer["body"]) < 5_000_000   # far below what Lambda may return (6 MB)
    if response.status >= 400:
        assert set(payload) == {"error"} and {"code", "message"} <= set(payload["error"])
        assert isinstance(payload["error"]["code"], str) and isinstance(payload["error"]["message"], str)
        assert response.queued == [] and sqs.accepted == []
    else:
        assert response.status == 200 and payload["accepted"] >= 1
    assert len(sqs.accepted) == len(response.queued)
    for entry in sqs.accepted:
        text = entry["MessageBody"]
        _strict_loads(text)
        message = QueueMessage.from_json(text)
        assert validate_event(message.event) == message.event   # the worker's reading of it
        assert event_depth(message.event) <= MAX_EVENT_DEPTH
        assert len(message.idempotency_key.encode("utf-8", "surrogatepass")) <= 2048
        assert entry["MessageAttributes"]["segmentMessageId"]["StringValue"] == message.message_id
    return payload


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(min_value=0, max_value=2**32))
def test_nasty_bodies_never_5xx_and_every_queued_message_is_readable(seed):
    rng = random.Random(seed)
    body = nasty_body(seed)
    check_request(body, _headers(rng, body), base64_body=rng.random() < 0.2)


# Hypothesis's own JSON values (any text, any numbers) in every field of an event.
_ANY_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(st.characters(codec=None))),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=10,
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.fixed_dictionaries({"type": st.sampled_from(["identify", "track", "page"]), "userId": st.just("u")},
                             optional={name: _ANY_JSON for name in _FIELDS if name not in ("type", "userId")}),
       st.booleans())
def test_any_json_in_any_field_never_5xx(event, ascii_only):
    body = json.dumps(event, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    check_request(body, {"content-type": "application/json",
                         "x-signature": hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()})


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200), st.dictionaries(st.text(max_size=20), st.text(max_size=60), max_size=4))
def test_any_bytes_and_headers_never_5xx(body, headers):
    signed = {**headers, "content-type": "application/json",
              "x-signature": hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()}
    check_request(body, headers, base64_body=True)
    check_request(body, signed, base64_body=True)


@pytest.mark.parametrize("body", [b'["\\udfff"]', b"[" * 20_000 + b"]" * 20_000])
def test_a_wrong_signature_on_a_hostile_batch_is_401(body):
    answer = check_request(body, {"content-type": "application/json", "x-signature": "0" * 40})
    assert answer["error"]["code"] == "bad_signature"


# --- the documented answers -------------------------------------------------------------------------

def _signed(body: bytes) -> dict[str, str]:
    signature = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    return {"content-type": "application/json", "x-signature": signature}


def _answer(body: bytes) -> dict:
    return check_request(body, _signed(body))


IDENTIFY = '{"type":"identify","userId":"u","messageId":"m-1"'


@pytest.mark.parametrize("depth", [MAX_EVENT_DEPTH + 1, 1000, 20_000])
def test_an_event_nested_past_the_limit_is_400_too_deep(depth):
    nested = "[" * (depth - 2) + "1" + "]" * (depth - 2)   # the event and its traits are two levels
    answer = _answer(f'{IDENTIFY},"traits":{{"a":{nested}}}}}'.encode())
    assert answer["error"]["code"] == "too_deep", answer


def test_an_event_at_the_limit_is_queued():
    nested = "[" * (MAX_EVENT_DEPTH - 2) + "1" + "]" * (MAX_EVENT_DEPTH - 2)
    answer = _answer(f'{IDENTIFY},"traits":{{"a":{nested}}}}}'.encode())
    assert answer["accepted"] == 1


def test_in_a_batch_only_the_event_past_the_limit_is_refused():
    nested = "[" * (MAX_EVENT_DEPTH - 1) + "1" + "]" * (MAX_EVENT_DEPTH - 1)
    body = f'[{IDENTIFY},"traits":{{"a":{nested}}}}},{{"type":"identify","userId":"u","messageId":"m-2"}}]'
    answer = _answer(body.encode())
    assert answer["accepted"] == 1 and answer["invalid"][0]["index"] == 0
    assert answer["invalid"][0]["messageId"] == "m-1" and "levels" in answer["invalid"][0]["error"]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 400])
def test_not_strict_json_numbers_are_400(token):
    answer = _answer(f'{IDENTIFY},"traits":{{"score":{token}}}}}'.encode())
    assert answer["error"]["code"] == "invalid_json", answer


@pytest.mark.parametrize("escape", [r"\ud800", r"\udfff", r"a\ud83d"])
def test_a_lone_surrogate_is_400_naming_the_field(escape):
    answer = _answer(f'{IDENTIFY},"traits":{{"name":"{escape}"}}}}'.encode())
    assert answer["error"]["code"] == "invalid_characters" and answer["error"]["message"].startswith("traits.name:")


@pytest.mark.parametrize("text", ["\ufffe", "\uffff", r"\ufffe", r"\uffff", "\U0001fffe", r"\ud83d\ude00"])
def test_non_characters_are_queued_escaped(text):
    sqs = RuleCheckingSqs()
    body = f'{IDENTIFY},"traits":{{"name":"x{text}"}}}}'.encode()
    response = handle_ingest(IngestRequest(_signed(body), body), ROUTER, CREDENTIALS, SqsPublisher(sqs, QUEUES))
    assert response.status == 200 and sqs.accepted and not sqs.refused
    for entry in sqs.accepted:
        assert QueueMessage.from_json(entry["MessageBody"]).event["traits"]["name"] == "x" + json.loads(f'"{text}"')


@pytest.mark.parametrize("message_id", ["m\ufffe", "m\\u0001", "m\\ud800", "m" * 1025])
def test_a_message_id_sqs_cannot_carry_is_400(message_id):
    answer = _answer(f'{{"type":"identify","userId":"u","messageId":"{message_id}"}}'.encode())
    assert answer["error"]["code"] in ("invalid_event", "invalid_characters")
    assert "messageId" in answer["error"]["message"] or "surrogate" in answer["error"]["message"]


def test_a_message_id_at_the_limit_is_queued():
    answer = _answer(f'{{"type":"identify","userId":"u","messageId":"{"m" * 1024}"}}'.encode())
    assert answer["accepted"] == 1


@pytest.mark.parametrize("count,status", [(5000, 200), (5001, 413), (120_000, 413)])
def test_events_per_request_are_capped(count, status):
    body = ("[" + ",".join(['{"type":"page","anonymousId":"a"}'] * count) + "]").encode()
    answer = _answer(body)
    if status == 413:
        assert answer["error"]["code"] == "too_many_events" and "5000" in answer["error"]["message"]
    else:
        assert answer["accepted"] == count


def test_an_answer_listing_every_invalid_event_stays_small():
    bad = json.dumps({"type": "\u00e9" * 300, "userId": "u", "messageId": "\u00e9" * 30,
                      "timestamp": "x", "sentAt": 1.5j.imag, "context": 1, "traits": 2, "properties": 3},
                     ensure_ascii=False)
    body = ("[" + ",".join([bad] * 5000) + "]").encode()
    assert len(body) < MAX_BODY_BYTES
    answer = _answer(body)   # check_request: the answer is far below what a Lambda function may return
    assert answer["error"]["code"] == "invalid_batch" and len(answer["error"]["invalid"]) == 5000

