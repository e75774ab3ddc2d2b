"""Writes docs/actions/<slug>.md from the action definitions (actions.py) and the packaged subscriptions.

``python -m local.docs`` after changing a field, a default mapping or default_subscriptions.json; a test
(tests/unit/test_docs.py) fails while the committed pages differ from what this writes. What Qualtrics
receives is written here, per field: a field added to actions.py without a line here fails the test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from segment_qualtrics.destination.actions import ACTIONS, ActionDefinition
from segment_qualtrics.segment.mapping_kit import UNDEFINED

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "actions"
DEFAULT_SUBSCRIPTIONS = ROOT / "layers" / "common" / "segment_qualtrics" / "destination" / "default_subscriptions.json"

_CONTACT = "create-contact body (`POST /API/v3/directories/{directoryId}/contacts`)"
_LOOKUP = "contact search filter, and the body of the contact created when the search finds none"
RECEIVES: dict[str, dict[str, str]] = {
    "addContactToXmd": {
        "directoryId": "the directory in the URL: `POST /API/v3/directories/{directoryId}/contacts`",
        "extRef": f"`extRef` of the {_CONTACT}",
        "email": f"`email` of the {_CONTACT}",
        "phone": f"`phone` of the {_CONTACT}",
        "firstName": f"`firstName` of the {_CONTACT}",
        "lastName": f"`lastName` of the {_CONTACT}",
        "language": f"`language` of the {_CONTACT}",
        "unsubscribed": f"`unsubscribed` of the {_CONTACT}",
        "embeddedData": f"`embeddedData` of the {_CONTACT}; nested values are sent as JSON text",
    },
    "upsertContactTransaction": {
        "directoryId": "the directory in the URLs: contact search, contact creation, "
                       "`POST /API/v3/directories/{directoryId}/transactions`",
        "mailingListId": "`mailingListId` of each transaction",
        "contactId": "`contactId` of each transaction; when absent, the contact found (or created) by extRef, "
                     "phone, email",
        "extRef": f"first key of the {_LOOKUP}",
        "email": f"third key of the {_LOOKUP}",
        "phone": f"second key of the {_LOOKUP}",
        "firstName": "`firstName` of the contact created when the search finds none",
        "lastName": "`lastName` of the contact created when the search finds none",
        "language": "`language` of the contact created when the search finds none",
        "unsubscribed": "`unsubscribed` of the contact created when the search finds none",
        "embeddedData": "`embeddedData` of the contact created when the search finds none",
        "transactionDate": "`transactionDate` of the transaction, as UTC `YYYY-MM-DD HH:MM:SS` (epoch milliseconds "
                           "and ISO dates are converted); absent: when the ingest received the event",
        "transactionData": "`data` of the transaction, flat (nested values as JSON text), plus `segmentMessageId` "
                           "(how a retry finds a transaction already recorded)",
    },
    "deleteContact": {
        "directoryId": "the directory in the URLs: the contact search and "
                       "`DELETE /API/v3/directories/{directoryId}/contacts/{contactId}`",
        "contactId": "the contact of `DELETE …/contacts/{contactId}`; set, no search is made",
        "extRef": "first key of the contact search filter; each contact found is deleted (at most 5)",
        "email": "third key of the contact search filter",
        "phone": "second key of the contact search filter",
    },
    "triggerXflowWorkflow": {
        "workflowUrl": "the URL posted to, with the API token in `X-API-TOKEN` (only Qualtrics https hosts, or "
                       "QUALTRICS_BASE_URL's origin, receive it)",
        "eventPayload": "the JSON body of `POST {workflowUrl}`",
    },
}

NOTES: dict[str, str] = {
    "addContactToXmd": "",
    "upsertContactTransaction": """
## Where the email of a track event is

Segment puts a user's traits on an **identify** at `traits`, but on a **track** (such as
`track "Transaction Created"`) at `context.traits`. The default mapping of `email`, `phone`, `firstName`,
`lastName` and `language` reads `$.traits.…` (as Segment's own Qualtrics destination does), so a track event
whose traits are only in `context.traits` gives a contact with no email, and the contact search by email
finds nothing. Map them from `context.traits` in your subscription:

```json
"email": {"@if": {"exists": {"@path": "$.context.traits.email"},
                  "then": {"@path": "$.context.traits.email"}, "else": {"@path": "$.traits.email"}}}
```

`make preview EVENT=your-event.json` shows the payload each subscription would build, before anything is sent.
""",
    "triggerXflowWorkflow": "",
    "deleteContact": """
## Deleting from a track event

Segment sends its `delete` call when a user asks to be forgotten (the default trigger). To delete on one of
your own events instead, give the subscription that trigger, and map the identifiers from where that event
carries them:

```json
{"name": "Delete contact on account deletion", "enabled": true, "actionSlug": "deleteContact",
 "trigger": "type = \\"track\\" and event = \\"Account Deleted\\"",
 "mapping": {"directoryId": "${QUALTRICS_DIRECTORY_ID}", "email": {"@path": "$.context.traits.email"}}}
```

Outcomes, limits and retries: [Deleting contacts](../delete-contact.md).
""",
}


def _code(value: Any) -> str:
    return "`" + json.dumps(value, separators=(", ", ": ")).replace("|", "\\|") + "`"


def _packaged(slug: str) -> list[dict[str, Any]]:
    config = json.loads(DEFAULT_SUBSCRIPTIONS.read_text())
    return [s for s in config["subscriptions"] if s["actionSlug"] == slug]


def render(action: ActionDefinition) -> str:
    receives = RECEIVES[action.slug]
    lines = [
        f"# {action.title} (`{action.slug}`)",
        "",
        "<!-- Generated by `python -m local.docs` from actions.py and default_subscriptions.json: edit those, "
        "then run it. -->",
        "",
        f"Default trigger: {_code(action.default_trigger) if action.default_trigger else 'none (set one)'}.",
        "",
        "| Field | Type | Required | Default mapping | What Qualtrics receives |",
        "|---|---|---|---|---|",
    ]
    for name, spec in action.fields.items():
        default = _code(spec.default) if spec.default is not UNDEFINED else "none"
        lines.append(f"| `{name}` | {spec.type} | {'yes' if spec.required else 'no'} | {default} | "
                     f"{spec.description} Qualtrics: {receives[name]}. |")
    lines += [
        "",
        "A mapping in a subscription replaces the default of the fields it names; the others keep their default. "
        "Fields that resolve to nothing, `\"\"` or `null` are left out; a required field left out dead-letters "
        "the event with `invalid_payload`.",
        "",
        "## In the packaged subscriptions (default_subscriptions.json)",
        "",
    ]
    for subscription in _packaged(action.slug):
        state = "enabled" if subscription.get("enabled", True) else "disabled"
        lines += [f"- **{subscription['name']}** ({state}), trigger {_code(subscription['trigger'])}, mapping:", "",
                  "  ```json", *("  " + line for line in json.dumps(subscription["mapping"], indent=2).splitlines()),
                  "  ```", ""]
    text = "\n".join(lines).rstrip() + "\n"
    if NOTES[action.slug]:
        text += NOTES[action.slug]
    return text


def pages() -> dict[Path, str]:
    return {DOCS / f"{slug}.md": render(action) for slug, action in ACTIONS.items()}


def main() -> int:
    DOCS.mkdir(parents=True, exist_ok=True)
    for path, text in pages().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
