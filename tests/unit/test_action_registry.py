"""The action registry (destination/actions.py ACTIONS): every other list of actions is derived from it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from segment_qualtrics.destination.actions import ACTIONS, ActionDefinition
from segment_qualtrics.runtime.settings import IngestSettings
from segment_qualtrics.tools.dlq import queues_from_state

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("action", list(ACTIONS.values()), ids=list(ACTIONS))
def test_every_executor_path_names_an_executor_class(action: ActionDefinition) -> None:
    executor = action.executor_class()
    assert isinstance(executor, type) and callable(getattr(executor, "execute", None)), action.executor
    assert action.slug in ACTIONS and ACTIONS[action.slug] is action


def test_derived_names() -> None:
    contact = ACTIONS["addContactToXmd"]
    assert (contact.prefix, contact.queue_variable) == ("AddContactToXmd", "ADD_CONTACT_TO_XMD_QUEUE_URL")
    transaction = ACTIONS["upsertContactTransaction"]
    assert transaction.queue_variable == "UPSERT_CONTACT_TRANSACTION_QUEUE_URL"
    assert len({a.prefix for a in ACTIONS.values()}) == len(ACTIONS)
    assert len({a.queue_variable for a in ACTIONS.values()}) == len(ACTIONS)


def test_the_ingest_reads_each_actions_queue_variable() -> None:
    environ = {"INGEST_SECRET_ARN": "arn", "QUEUE_URLS": "not read from the environment", "UNRELATED_QUEUE_URL": "x"}
    environ |= {a.queue_variable: f"https://sqs/{a.slug}" for a in ACTIONS.values()}
    environ["TRIGGER_XFLOW_WORKFLOW_QUEUE_URL"] = ""   # empty = not configured, as before
    settings = IngestSettings.from_environ(environ)
    assert settings.queue_urls() == {slug: f"https://sqs/{slug}" for slug in ACTIONS if slug != "triggerXflowWorkflow"}


def test_make_dlq_finds_each_actions_queues_by_its_prefix() -> None:
    state = {"queues": {f"{a.prefix}{kind}": f"url-{a.slug}-{kind}" for a in ACTIONS.values()
                        for kind in ("Queue", "DeadLetterQueue")}}
    queues = queues_from_state(state)
    assert {slug: (q.queue_url, q.dead_letter_queue_url) for slug, q in queues.items()} == {
        slug: (f"url-{slug}-Queue", f"url-{slug}-DeadLetterQueue") for slug in ACTIONS}


def test_the_registry_imports_no_executor() -> None:
    """A worker imports its own action's executor only; the registry (destination/) none, nor requests."""
    code = ("import sys, segment_qualtrics.destination.actions as a; "
            "print(sorted(m for m in sys.modules if m.startswith(('segment_qualtrics.delivery', 'requests'))))")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "layers" / "common")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
