"""deleteContact as the tools see it once registered: preview, check-config, import-segment, the docs page.
"""

from __future__ import annotations

import io
import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from segment_qualtrics.delivery.executors_delete import (
    MAX_CONTACTS_PER_DELETE,
    PREVIEW_CONTACT_ID,
)
from segment_qualtrics.delivery.outcomes import Outcome
from segment_qualtrics.destination.actions import ACTIONS
from segment_qualtrics.destination.subscriptions import parse_subscriptions
from segment_qualtrics.tools.cli import main
from segment_qualtrics.tools.preview import MASKED_TOKEN, preview, render

from local.docs import RECEIVES
from local.docs import render as render_page

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
VARS = {"QUALTRICS_DIRECTORY_ID": "POOL_D", "QUALTRICS_MAILING_LIST_ID": "CG_M"}
# The packaged entry (default_subscriptions.json) once the registry holds the action: shipped disabled.
PACKAGED = {"name": "Delete contact", "enabled": False, "actionSlug": "deleteContact", "trigger": 'type = "delete"',
            "mapping": {"directoryId": "${QUALTRICS_DIRECTORY_ID}"}}
ENABLED = {**PACKAGED, "enabled": True}
DELETE_CONTACT = ACTIONS["deleteContact"]
SEGMENT_DELETE = {"type": "delete", "messageId": "del-1", "userId": "user-1", "context": {"ip": "203.0.113.7"}}


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the preview tried to open a network connection")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def cli(*argv, environ=None):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), environ=VARS if environ is None else environ, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path, name, data) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


# --- preview ------------------------------------------------------------------------------------

def test_preview_shows_the_search_and_the_delete_request(no_network):
    subs = parse_subscriptions({"subscriptions": [ENABLED]}, environ=VARS)
    result = preview([SEGMENT_DELETE], subs, now=NOW)
    [sub] = result.events[0].subscriptions
    assert sub.triggered and sub.outcome == "delivered"
    assert sub.payload == {"directoryId": "POOL_D", "extRef": "user-1"}
    search, delete = sub.requests
    assert (search.method, search.url) == ("POST", "https://iad1.qualtrics.com/API/v3/directories/POOL_D/contacts/search")
    assert search.body == {"filter": {"filterType": "extRef", "comparison": "eq", "value": "user-1"}}
    assert f"none if more than {MAX_CONTACTS_PER_DELETE} match" in search.step
    assert (delete.method, delete.url) == (
        "DELETE", f"https://iad1.qualtrics.com/API/v3/directories/POOL_D/contacts/{PREVIEW_CONTACT_ID}")
    assert delete.body is None and delete.headers["X-API-TOKEN"] == MASKED_TOKEN
    text = render(result)
    assert f"DELETE https://iad1.qualtrics.com/API/v3/directories/POOL_D/contacts/{PREVIEW_CONTACT_ID}" in text


def test_preview_with_a_contact_id_shows_only_the_delete(no_network):
    item = {**ENABLED, "mapping": {**ENABLED["mapping"], "contactId": {"@path": "$.context.traits.contactId"}}}
    subs = parse_subscriptions({"subscriptions": [item]}, environ=VARS)
    event = {**SEGMENT_DELETE, "context": {"traits": {"contactId": "CID_123"}}}
    [sub] = preview([event], subs, now=NOW).events[0].subscriptions
    assert [(r.method, r.url.rsplit("/", 1)[1]) for r in sub.requests] == [("DELETE", "CID_123")]


def test_preview_says_why_an_unidentified_delete_would_be_dead_lettered(no_network):
    subs = parse_subscriptions({"subscriptions": [ENABLED]}, environ=VARS)
    anonymous = {"type": "delete", "messageId": "del-2", "anonymousId": "anon-1"}
    [sub] = preview([anonymous], subs, now=NOW).events[0].subscriptions
    assert sub.outcome is Outcome.DEAD_LETTERED and sub.error["code"] == "invalid_payload"
    assert "needs contactId, or at least one of extRef, email, phone" in sub.error["message"]
    assert sub.requests == []


def test_the_packaged_entry_is_disabled_and_the_disabled_one_does_nothing_in_preview(no_network):
    [sub] = parse_subscriptions({"subscriptions": [PACKAGED]}, environ={})
    assert not sub.enabled
    [shown] = preview([SEGMENT_DELETE], [sub], now=NOW).events[0].subscriptions
    assert shown.outcome == "disabled" and shown.triggered and shown.requests == []


# --- check-config -------------------------------------------------------------------------------

def test_check_config_accepts_the_subscription(tmp_path):
    code, out, err = cli("check-config", str(write(tmp_path, "s.json", {"subscriptions": [ENABLED]})))
    assert code == 0 and err == "", err
    assert "deleteContact" in out and 'when type = "delete"' in out


@pytest.mark.parametrize(("mapping", "needle"), [
    ({"directoryId": None}, "required field 'directoryId'"),
    ({"directoryId": "POOL_D/../x"}, "mapping.directoryId"),
    ({"directoryId": "POOL_D", "contactId": ".."}, "mapping.contactId"),
    ({"directoryId": "POOL_D", "mailingListId": "CG_1"}, "unknown field 'mailingListId'"),
])
def test_check_config_reports_a_bad_delete_mapping(tmp_path, mapping, needle):
    item = {**ENABLED, "mapping": mapping}
    code, out, err = cli("check-config", str(write(tmp_path, "s.json", {"subscriptions": [item]})))
    assert code == 1 and needle in err, err


# --- import-segment ------------------------------------------------------------------------------

def test_import_segment_says_segment_has_no_delete_action(tmp_path):
    export = {"data": {"subscriptions": [
        {"id": "s1", "name": "Contacts", "actionSlug": "addContactToXmd", "enabled": True,
         "trigger": 'type = "identify"', "settings": {"directoryId": "POOL_1"}}]}}
    code, out, err = cli("import-segment", str(write(tmp_path, "export.json", export)))
    assert "not in Segment: deleteContact: Segment's Qualtrics destination has no action that deletes" in err
    assert "docs/delete-contact.md" in err
    assert [s["actionSlug"] for s in json.loads(out)["subscriptions"]] == ["addContactToXmd"]


# --- docs ---------------------------------------------------------------------------------------

def test_the_docs_page_can_be_generated_and_says_what_qualtrics_receives():
    assert set(RECEIVES[DELETE_CONTACT.slug]) == set(DELETE_CONTACT.fields)
    page = render_page(DELETE_CONTACT)
    assert 'Default trigger: `"type = \\"delete\\""`' in page
    assert 'event = \\"Account Deleted\\"' in page and "(../delete-contact.md)" in page
    assert (ROOT / "docs" / "delete-contact.md").exists()
