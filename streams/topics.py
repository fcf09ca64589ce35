"""Faust topic objects for the catalogue. Values stay raw bytes: we decode them ourselves so
that bad records reach ``dead-letter`` instead of being dropped by Faust."""

from __future__ import annotations

from typing import Any

from appfirst.streams.app import app, settings
from appfirst.topics.catalogue import (
    BATCH_PROGRESS,
    FAILED_NUMBERS,
    METRIC_FACTS,
    PRACTICE_STATS,
    ROUTER_BY_PATIENT,
    SEND_OUTCOMES,
)


def _topic(*names: str) -> Any:
    return app.topic(
        *(settings.topic(n) for n in names),
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
    )


send_requests = _topic("send-requests")
practice_settings = _topic("practice-settings")
eligibility = _topic("eligibility")
dispatches = _topic("dispatches")
delivery_receipts = _topic("delivery-receipts")
read_receipts = _topic("read-receipts")
responses = _topic("responses")
fallbacks = _topic("fallbacks")
pilot_metrics = _topic("pilot-metrics")
dead_letter = _topic("dead-letter")
router_by_patient = _topic(ROUTER_BY_PATIENT)
metric_facts = _topic(METRIC_FACTS)
failed_numbers = _topic(FAILED_NUMBERS)
practice_stats = _topic(PRACTICE_STATS)
send_outcomes = _topic(SEND_OUTCOMES)
batches = _topic("batches")
batch_status = _topic("batch-status")
message_status = _topic("message-status")
batch_progress = _topic(BATCH_PROGRESS)

# Multi-topic sources: one agent sees every event of a message in partition order.
tracker_source = _topic(
    "dispatches", "delivery-receipts", "read-receipts", "fallbacks", SEND_OUTCOMES
)
metrics_source = _topic("dispatches", SEND_OUTCOMES, "read-receipts", "fallbacks", "responses")
dispatcher_source = _topic("dispatches", "fallbacks")
contactability_source = _topic("dispatches", "delivery-receipts")
batches_source = _topic("batches", BATCH_PROGRESS)
status_source = _topic("dispatches", SEND_OUTCOMES, "delivery-receipts", "read-receipts")
