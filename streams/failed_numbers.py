"""Numbers likely to fail: the latest failure of each number fingerprint, on every worker.

The per-message agent (``streams/messages.py``, its ``Contactability`` part) writes a
failure onto ``failed-numbers`` when an SMS failure receipt meets the number its message
went to; the router reads this cache to route around numbers that failed recently. Apart
from that agent so that a process that only routes loads no agent of its own. Fingerprints
are keyed hashes: no phone number is held here.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from appfirst.rules.contact import number_fingerprint
from appfirst.streams.broadcast import BroadcastTable
from appfirst.topics.catalogue import FAILED_NUMBERS

if TYPE_CHECKING:
    from appfirst.streams.context import Context


def _latest(_: str, value: bytes, current: datetime | None) -> datetime | None:
    failed_at = datetime.fromisoformat(json.loads(value)["failed_at"])
    return failed_at if current is None or failed_at > current else None


class FailedNumbers:
    """The latest failure of each number fingerprint, read whole from ``failed-numbers`` on
    every worker, and whether a number failed recently."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.settings = context.settings
        self._key = context.settings.number_hash_key.get_secret_value().encode()
        # fingerprint -> time of the latest failure, on every worker
        self.failed_numbers_cache: BroadcastTable[datetime] = context.broadcast(
            FAILED_NUMBERS, _latest, before_ready=True
        )

    def fingerprint(self, e164: str) -> str:
        return number_fingerprint(e164, self._key)

    def failed_recently(self, e164: str) -> bool:
        failed_at = self.failed_numbers_cache.get(self.fingerprint(e164))
        if failed_at is None:
            return False
        return self.context.clock.now() - failed_at <= timedelta(
            days=self.settings.likely_to_fail_days
        )
