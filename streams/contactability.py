"""Contactability: which numbers are likely to fail.

An SMS failure receipt (permanent or temporary) is joined back to the number its message
went to, via a table of message_id -> number fingerprint fed by ``dispatches``; the failure
is re-keyed by fingerprint onto ``failed-numbers``, which every worker reads whole
(``streams/failed_numbers.py``). Fingerprints are keyed hashes: no phone number is held here.
"""

from __future__ import annotations

import json
from typing import Any

from appfirst.streams.app import agent, json_rows
from appfirst.streams.failed_numbers import fingerprint
from appfirst.streams.io import decode, send, short_topic
from appfirst.streams.retention import keep_until, retain
from appfirst.streams.topics import contactability_source, failed_numbers
from appfirst.topics.models import DeliveryReceipt, Dispatch

FAILURES = frozenset({"permanent_failure", "temporary_failure"})

# message_id -> {"n": fingerprint of the number its SMS (or fallback SMS) goes to,
#                "f": time of its failure, "p": changelog partition, "end": epoch}
# A row waits APPFIRST_KEEP_SETTLED_SECONDS from its last write (longer than Notify's
# 72 h of retries, after which no failure receipt comes) for the half it lacks.
sms_numbers = json_rows("sms-numbers")
sms_rows = retain("sms-numbers", sms_numbers, "dispatches", lambda row: (row["p"], row["end"]))


async def _observe(event: Any) -> tuple[str, str, str] | None:
    """(message_id, "n" or "f", fingerprint or failure time), or None to skip."""
    if short_topic(event.message.topic) == "dispatches":
        d = await decode(event, Dispatch, "contactability")
        if d is None or not d.mobile or d.channel not in ("sms", "nhs_app"):
            return None
        return d.message_id, "n", fingerprint(d.mobile)
    receipt = await decode(event, DeliveryReceipt, "contactability")
    if receipt is None or receipt.channel != "sms" or receipt.status not in FAILURES:
        return None
    return receipt.message_id, "f", receipt.occurred_at.isoformat()


@agent(contactability_source)
async def join_failures(stream: Any) -> None:
    # The two topics are read in no fixed order: the failure may come before the dispatch.
    async for event in stream.events():
        seen = await _observe(event)
        if seen is None:
            continue
        message_id, field, value = seen
        entry = dict(sms_numbers.get(message_id) or {})
        if entry.get(field) == value or (field == "n" and "n" in entry):
            continue
        entry[field] = value
        if "n" in entry and "f" in entry:
            payload = json.dumps({"failed_at": entry["f"]}).encode()
            await send(failed_numbers, entry["n"].encode(), payload)
        entry.update(p=event.message.partition, end=keep_until())
        sms_numbers[message_id] = entry
        sms_rows.note(message_id, entry)
