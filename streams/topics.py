"""Faust topic objects for the catalogue. Values stay raw bytes: we decode them ourselves so
that bad records reach ``dead-letter`` instead of being dropped by Faust."""

from __future__ import annotations

from typing import Any

import faust

from appfirst.settings import Settings
from appfirst.topics.catalogue import (
    BATCH_PROGRESS,
    FAILED_NUMBERS,
    METRIC_FACTS,
    PRACTICE_STATS,
    ROUTER_BY_PATIENT,
    SEND_OUTCOMES,
)


class RawBytes(faust.Schema):  # type: ignore[type-arg]
    """Keys and values as the broker gave them, as Faust's ``raw`` codec returns them,
    without the codec registry Faust's schema goes through for every record and agent (3%
    of the worker's time on the bench's pipeline, measured 2026-12-07)."""

    def __init__(self) -> None:
        super().__init__(
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    def compile(self, app: Any, **_: Any) -> Any:
        create_event = app.create_event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return create_event(message.key, message.value, message.headers, message)

        return decode


class Topics:
    """Every topic a part reads or writes, as Faust topic objects of ``app``."""

    def __init__(self, app: Any, settings: Settings) -> None:
        def topic(*names: str) -> Any:
            return app.topic(
                *(settings.topic(n) for n in names),
                schema=RawBytes(),
                partitions=settings.partitions,
            )

        self.send_requests = topic("send-requests")
        self.practice_settings = topic("practice-settings")
        self.eligibility = topic("eligibility")
        self.dispatches = topic("dispatches")
        self.delivery_receipts = topic("delivery-receipts")
        self.read_receipts = topic("read-receipts")
        self.responses = topic("responses")
        self.fallbacks = topic("fallbacks")
        self.pilot_metrics = topic("pilot-metrics")
        self.dead_letter = topic("dead-letter")
        self.router_by_patient = topic(ROUTER_BY_PATIENT)
        self.metric_facts = topic(METRIC_FACTS)
        self.failed_numbers = topic(FAILED_NUMBERS)
        self.practice_stats = topic(PRACTICE_STATS)
        self.send_outcomes = topic(SEND_OUTCOMES)
        self.batches = topic("batches")
        self.batch_status = topic("batch-status")
        self.message_status = topic("message-status")
        self.batch_progress = topic(BATCH_PROGRESS)

        # Multi-topic sources: one agent sees every event of a message in partition order.
        self.dispatcher_source = topic("dispatches", "fallbacks")
        self.batches_source = topic("batches", BATCH_PROGRESS)
        self.messages_source = topic(
            "dispatches",
            SEND_OUTCOMES,
            "delivery-receipts",
            "read-receipts",
            "fallbacks",
            "responses",
        )
