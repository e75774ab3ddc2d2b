"""A short soak through the local stack with every fault at once: nothing lost, nothing done twice.

The longer, configurable version that prints figures is bench/soak.py (same code).
"""

from __future__ import annotations

from bench.soak import soak

# What the injected faults answer: 5xx, 429 and timeouts (the message's last attempt gives up with its reason).
TRANSIENT_CODES = {"qualtrics_server_error", "qualtrics_rate_limited", "qualtrics_timeout", "network_error"}


def test_soak_loses_nothing_and_duplicates_nothing(stack):
    result = soak(stack, events=240, seed=11, crashes=3, sqs_fault_batches=4, timeouts=1)
    report = "\n".join(result.lines())
    assert result.sqs_entries_refused == 4 and result.qualtrics_faults > 0, report   # the faults happened
    assert result.crashes == 3, report
    assert result.lost_contacts == result.duplicated_contacts == 0, report
    assert result.lost_transactions == result.duplicated_transactions == 0, report
    # Workflows (docs/error-model.md): every message runs, at most twice, and twice only after an ambiguous
    # failure of its own call (an "after" fault or a crash while it was in flight).
    assert result.lost_workflows == result.workflows_run_more == 0, report
    assert result.workflows_run_twice <= result.ambiguous_workflow_failures, report
    # Nothing is lost: a message that is not delivered is in its DLQ with its reason. Injected faults can, now
    # and then, fall on one message's every attempt (a transient error, dead-lettered after its attempts): that
    # is the error model working, not a loss. A dead letter without a reason would be one.
    assert "(no reason)" not in result.dead_letter_reasons, report
    assert set(result.dead_letter_reasons) <= TRANSIENT_CODES, report
    assert result.dead_letters <= 2, report
