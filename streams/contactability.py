"""Contactability: which numbers are likely to fail.

An SMS failure receipt (permanent or temporary) is joined back to the number its message
went to, held in the message's row (``streams/messages.py``) from its dispatch; the failure
is re-keyed by fingerprint onto ``failed-numbers``, which every worker reads whole
(``streams/failed_numbers.py``). Fingerprints are keyed hashes: no phone number is held here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appfirst.streams.context import Context
    from appfirst.streams.failed_numbers import FailedNumbers
    from appfirst.streams.messages import Seen

FAILURES = frozenset({"permanent_failure", "temporary_failure"})


class Contactability:
    """Joins SMS failure receipts to the numbers their messages went to, onto
    ``failed-numbers``: its part of the message's row is ``{"n": fingerprint of the number
    its SMS (or fallback SMS) goes to, "f": time of its failure, "e": its end}``."""

    def __init__(self, context: Context, failed: FailedNumbers) -> None:
        self.context = context
        self.failed = failed
        self.topics = context.topics
        self.io = context.io

    def end(self, entry: Any) -> float:
        """``APPFIRST_KEEP_SETTLED_SECONDS`` from its last write: longer than Notify's 72 h of
        retries, after which no failure receipt comes for the half it lacks."""
        return float(entry["e"])

    def _observe(self, seen: Seen) -> tuple[str, str] | None:
        """("n" or "f", fingerprint or failure time), or None to skip."""
        value = seen.value
        if seen.topic == "dispatches":
            if not value.mobile or value.channel not in ("sms", "nhs_app"):
                return None
            return "n", self.failed.fingerprint(value.mobile)
        if seen.topic != "delivery-receipts":
            return None
        if value.channel != "sms" or value.status not in FAILURES:
            return None
        return "f", value.occurred_at.isoformat()

    async def take(self, seen: Seen, entry: Any) -> Any:
        """The message's new entry after ``seen`` (having sent a failed number once both
        halves are in), or None if nothing changed. The two topics are read in no fixed
        order: the failure may come before the dispatch."""
        observed = self._observe(seen)
        if observed is None:
            return None
        field, value = observed
        new = dict(entry or {})
        if new.get(field) == value or (field == "n" and "n" in new):
            return None
        new[field] = value
        if "n" in new and "f" in new:
            payload = json.dumps({"failed_at": new["f"]}).encode()
            await self.io.send(self.topics.failed_numbers, new["n"].encode(), payload)
        new["e"] = self.context.retention.keep_until()
        return new
