"""Contactability: which numbers are likely to fail.

An SMS failure receipt (permanent or temporary) is joined back to the number its message
went to, via a table of message_id -> number fingerprint fed by ``dispatches``; the failure
is re-keyed by fingerprint onto ``failed-numbers``, which every worker reads whole
(``streams/failed_numbers.py``). Fingerprints are keyed hashes: no phone number is held here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from appfirst.topics.models import DeliveryReceipt, Dispatch

if TYPE_CHECKING:
    from appfirst.streams.context import Context
    from appfirst.streams.failed_numbers import FailedNumbers

FAILURES = frozenset({"permanent_failure", "temporary_failure"})


class Contactability:
    """Joins SMS failure receipts to the numbers their messages went to, onto
    ``failed-numbers``."""

    def __init__(self, context: Context, failed: FailedNumbers) -> None:
        self.context = context
        self.io = context.io
        self.failed = failed
        topics = context.topics
        self.topics = topics
        # message_id -> {"n": fingerprint of the number its SMS (or fallback SMS) goes to,
        #                "f": time of its failure, "p": changelog partition, "end": epoch}
        # A row waits APPFIRST_KEEP_SETTLED_SECONDS from its last write (longer than Notify's
        # 72 h of retries, after which no failure receipt comes) for the half it lacks.
        self.sms_numbers = context.json_rows("sms-numbers")
        self.sms_rows = context.retention.retain(
            "sms-numbers", self.sms_numbers, "dispatches", lambda row: (row["p"], row["end"])
        )
        self.join_failures: Any = context.agent(topics.contactability_source)(self._join_failures)

    async def _observe(self, event: Any) -> tuple[str, str, str] | None:
        """(message_id, "n" or "f", fingerprint or failure time), or None to skip."""
        if self.io.short_topic(event.message.topic) == "dispatches":
            d = await self.io.decode(event, Dispatch, "contactability")
            if d is None or not d.mobile or d.channel not in ("sms", "nhs_app"):
                return None
            return d.message_id, "n", self.failed.fingerprint(d.mobile)
        receipt = await self.io.decode(event, DeliveryReceipt, "contactability")
        if receipt is None or receipt.channel != "sms" or receipt.status not in FAILURES:
            return None
        return receipt.message_id, "f", receipt.occurred_at.isoformat()

    async def _join_failures(self, stream: Any) -> None:
        # The two topics are read in no fixed order: the failure may come before the dispatch.
        async for event in stream.events():
            seen = await self._observe(event)
            if seen is None:
                continue
            message_id, field, value = seen
            entry = dict(self.sms_numbers.get(message_id) or {})
            if entry.get(field) == value or (field == "n" and "n" in entry):
                continue
            entry[field] = value
            if "n" in entry and "f" in entry:
                payload = json.dumps({"failed_at": entry["f"]}).encode()
                await self.io.send(self.topics.failed_numbers, entry["n"].encode(), payload)
            entry.update(p=event.message.partition, end=self.context.retention.keep_until())
            self.sms_numbers[message_id] = entry
            self.sms_rows.note(message_id, entry)
