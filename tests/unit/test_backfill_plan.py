"""The backfill planner: live rules per record, lanes, the live idempotency key, imports within limits."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from segment_qualtrics.delivery.transactions import transaction_key
from segment_qualtrics.delivery.worker import QueuedWork
from segment_qualtrics.destination.envelope import QueueMessage
from segment_qualtrics.destination.subscriptions import parse_subscriptions
from segment_qualtrics.tools.backfill_plan import (
    BULK,
    QUEUE,
    Planner,
    contact_size,
    import_batches,
    parse_event,
)

CONFIG = {"subscriptions": [
    {"name": "Contacts", "actionSlug": "addContactToXmd", "trigger": 'type = "identify"',
     "mapping": {"directoryId": "POOL_1", "embeddedData": {"@path": "$.traits.extra"}}},
    {"name": "Orders", "actionSlug": "upsertContactTransaction", "trigger": 'type = "track"',
     "mapping": {"directoryId": "POOL_1", "mailingListId": "CG_1", "transactionData": {"@path": "$.properties"}}},
    {"name": "Flow", "actionSlug": "triggerXflowWorkflow", "trigger": 'event = "Flow"',
     "mapping": {"workflowUrl": "https://iad1.qualtrics.com/inbound-event/v1/events/json/triggers?urlTokenId=x"}},
]}
LANES = {"addContactToXmd": BULK, "upsertContactTransaction": BULK, "triggerXflowWorkflow": QUEUE}


def planner(lanes=LANES, mailing_list="CG_1") -> Planner:
    return Planner(parse_subscriptions(CONFIG, environ={}), lanes, mailing_list)


def line(event: dict) -> bytes:
    return json.dumps(event).encode()


def order(n: int, **more) -> dict:
    return {"type": "track", "event": "Order", "messageId": f"m{n}", "userId": f"u{n}",
            "properties": {"total": n, **more}, "timestamp": "2025-01-02T03:04:05Z"}


def test_a_transaction_is_bulk_with_the_live_key_and_recovery_marker():
    planned = planner().plan(7, line(order(1)))
    [item] = planned.items
    assert (item.lane, item.directory, item.mailing_list, item.line) == (BULK, "POOL_1", "CG_1", 7)
    live = QueueMessage("upsertContactTransaction", "Orders", "m1", "2025-01-02T03:04:05Z", order(1))
    assert item.key == live.idempotency_key
    data = item.contact["transactionData"]
    assert data["segmentDeliveryKey"] == transaction_key(QueuedWork("", "", "", 1, message=live))
    assert data["segmentMessageId"] == "m1" and data["segmentTransactionDate"] == "2025-01-02 03:04:05"
    assert data["total"] == 1 and item.contact["extRef"] == "u1"


def test_contacts_go_to_the_queue_without_a_mailing_list_and_workflows_always():
    identify = {"type": "identify", "messageId": "i1", "userId": "u1", "traits": {"email": "a@b.c"}}
    assert planner(mailing_list=None).plan(1, line(identify)).items[0].lane == QUEUE
    assert planner().plan(1, line(identify)).items[0].lane == BULK
    flow = planner().plan(1, line({**order(1), "event": "Flow"})).items
    assert sorted((i.action, i.lane) for i in flow) == [("triggerXflowWorkflow", QUEUE),
                                                         ("upsertContactTransaction", BULK)]


def test_what_an_import_cannot_express_goes_to_the_queue():
    known = {**order(1), "traits": {"qualtricsContactId": "CID_1"}}
    mapping = CONFIG["subscriptions"][1]["mapping"]
    config = json.loads(json.dumps(CONFIG))
    config["subscriptions"][1]["mapping"] = {**mapping, "contactId": {"@path": "$.traits.qualtricsContactId"},
                                             "embeddedData": {"@path": "$.traits.extra"}}
    plan = Planner(parse_subscriptions(config, environ={}), LANES, "CG_1")
    [item] = plan.plan(1, line(known)).items
    assert item.lane == QUEUE and "contactId" in item.why_queue
    clash = {**order(2, plan="gold"), "traits": {"extra": {"plan": "basic"}}}
    [item] = plan.plan(2, line(clash)).items
    assert item.lane == QUEUE and "share a name" in item.why_queue


def test_invalid_records_and_payloads_are_rejects_with_reasons():
    plan = planner()
    assert "one JSON object" in plan.plan(1, b"[1]").rejects[0].reason
    assert "unknown event type" in plan.plan(2, b'{"type": "buy"}').rejects[0].reason
    assert "too_deep" in plan.plan(3, b'{"a":' * 100 + b"1" + b"}" * 100).rejects[0].reason
    assert "not a batch" in plan.plan(4, b'{"batch": [{"type": "identify"}, {"type": "identify"}]}').rejects[0].reason
    big = plan.plan(5, line({"type": "identify", "userId": "u", "traits": {"x": "y" * 300_000}}))
    assert "limit is 262144" in big.rejects[0].reason
    bad_email = plan.plan(6, line({**order(6), "traits": {"email": {"not": "a string"}}}))
    [reject] = bad_email.rejects
    assert reject.subscription == "Orders" and "invalid_payload" in reject.reason and "email" in reject.reason
    assert (reject.line, reject.message_id) == (6, "m6")
    assert plan.plan(7, None, "the line is too long").rejects[0].reason == "the line is too long"


def test_the_same_event_twice_in_the_input_is_planned_once():
    plan = planner()
    assert len(plan.plan(1, line(order(1))).items) == 1
    again = plan.plan(9, line(order(1)))
    assert again.items == [] and again.duplicates == 1


def test_an_event_without_a_message_id_gets_the_ingests_derived_id():
    event = {k: v for k, v in order(1).items() if k != "messageId"}
    first, second = planner().plan(1, line(event)).items, planner().plan(1, line(event)).items
    assert first[0].message_id.startswith("derived-") and first[0].key == second[0].key


def test_parse_event_applies_the_ingests_checks():
    assert parse_event(b'{"type": "identify", "userId": "u", "n": 1e999}')[0] is None
    assert parse_event(b'{"type": "identify", "userId": "\xff"}')[1].startswith("invalid_json")
    event, _ = parse_event(b'{"type": "identify", "userId": 42}')
    assert event["userId"] == 42 and event["messageId"].startswith("derived-")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["CG_1", "CG_2"]), st.integers(0, 3000),
                          st.sampled_from(["a", "b", "c"]), st.booleans()), max_size=60),
       st.integers(1, 20), st.integers(2_000, 20_000))
def test_imports_keep_every_item_once_in_order_within_the_limits(specs, max_contacts, max_bytes):
    plan = planner()
    items = []
    for n, (mailing_list, pad, field, embedded) in enumerate(specs):
        event = {**order(n), "properties": {field: "x" * pad}}
        if embedded:
            event["traits"] = {"extra": {"b": 1}}
        [item] = plan.plan(n, line(event)).items
        item.mailing_list = mailing_list
        if embedded:
            item.contact["embeddedData"] = {"b": 1}
        items.append(item)
    batches, too_big = import_batches(items, max_contacts, max_bytes)
    kept = [i.line for b in batches for i in b.items] + [i.line for i in too_big]
    assert sorted(kept) == list(range(len(specs)))
    for batch in batches:
        assert 0 < len(batch.items) <= max_contacts
        assert sum(contact_size(i.contact) for i in batch.items) <= max_bytes
        assert {i.mailing_list for i in batch.items} == {batch.mailing_list}
        lines = [i.line for i in batch.items]
        assert lines == sorted(lines)
        embedded = {k for i in batch.items for k in i.contact.get("embeddedData", {})}
        assert not embedded & set(batch.fields)   # Qualtrics would refuse such contacts
        body = batch.body("BT_1")
        assert body["transactionMeta"] == {"batchId": "BT_1", "fields": list(batch.fields)}
    for item in too_big:
        shared = set(item.contact.get("embeddedData", {})) & set(item.contact["transactionData"])
        assert contact_size(item.contact) > max_bytes or shared
        assert item.why_queue
