"""Receipts reconciliation: the NHS App's daily receipts report against what the real-time
callbacks already brought, publishing only the receipts that never came.

Run it for yesterday once the report is complete (e.g. 06:00 daily): ``appfirst reconcile``.
A receipt that arrives both ways is harmless (the tracker and metrics keep the first of each
kind), but filling only the gaps keeps the topics honest about what came when.
A read receipt filled in after its deadline cannot stop a fallback already sent; it still
counts the message as read for the pilot metrics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from appfirst.errors import DecodeError
from appfirst.jobs.kafka import publish, read_all
from appfirst.providers import factory
from appfirst.providers.callbacks import parse_nhs_app
from appfirst.settings import Settings
from appfirst.topics.models import DeliveryReceipt, Event, ReadReceipt

Key = tuple[str, ...]


def key_of(event: DeliveryReceipt | ReadReceipt) -> Key:
    if isinstance(event, ReadReceipt):
        return ("read", event.message_id)
    return ("delivery", event.message_id, event.leg, event.status)


@dataclass
class ReconcileResult:
    day: date
    in_report: int = 0
    already_had: int = 0
    filled: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


async def reconcile(settings: Settings, day: date) -> ReconcileResult:
    result = ReconcileResult(day)
    reports = factory.reports(settings)
    from_report: dict[Key, DeliveryReceipt | ReadReceipt] = {}
    try:
        async for task in reports.receipts(day):
            try:
                event = parse_nhs_app(task)
            except DecodeError:
                result.skipped["not ours or malformed"] += 1
                continue
            if event is None:
                result.skipped["no contract event"] += 1
                continue
            from_report.setdefault(key_of(event), event)
    finally:
        await reports.aclose()
    result.in_report = len(from_report)
    # Callbacks for the day arrive on or after it; a day's margin covers clock skew.
    start = datetime.combine(day - timedelta(days=1), datetime.min.time(), UTC)
    since_ms = int(start.timestamp() * 1000)
    seen: set[Key] = set()
    for d in await read_all(settings, "delivery-receipts", DeliveryReceipt, since_ms):
        seen.add(key_of(d))
    for r in await read_all(settings, "read-receipts", ReadReceipt, since_ms):
        seen.add(key_of(r))
    deliveries: list[tuple[str, Event]] = []
    reads: list[tuple[str, Event]] = []
    for k, event in from_report.items():
        if k in seen:
            result.already_had += 1
            continue
        if isinstance(event, ReadReceipt):
            reads.append((event.message_id, event))
            result.filled["read"] += 1
        else:
            deliveries.append((event.message_id, event))
            result.filled[event.status] += 1
    await publish(settings, "delivery-receipts", deliveries)
    await publish(settings, "read-receipts", reads)
    return result
