"""Numbers likely to fail: the latest failure of each number fingerprint, on every worker.

``contactability`` writes a failure onto ``failed-numbers`` when an SMS failure receipt
meets the number its message went to; the router reads this cache to route around numbers
that failed recently. Apart from ``contactability`` so that a process that only routes
loads no agent of its own. Fingerprints are keyed hashes: no phone number is held here.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from appfirst.rules.contact import number_fingerprint
from appfirst.streams.app import app, clock, settings
from appfirst.streams.broadcast import BroadcastTable
from appfirst.topics.catalogue import FAILED_NUMBERS

_KEY = settings.number_hash_key.get_secret_value().encode()


def _latest(_: str, value: bytes, current: datetime | None) -> datetime | None:
    failed_at = datetime.fromisoformat(json.loads(value)["failed_at"])
    return failed_at if current is None or failed_at > current else None


# fingerprint -> time of the latest failure, on every worker
failed_numbers_cache: BroadcastTable[datetime] = BroadcastTable(
    settings, settings.topic(FAILED_NUMBERS), _latest
)


@app.task  # type: ignore[untyped-decorator]
async def follow_failed_numbers() -> None:
    await failed_numbers_cache.run()


def fingerprint(e164: str) -> str:
    return number_fingerprint(e164, _KEY)


def failed_recently(e164: str) -> bool:
    failed_at = failed_numbers_cache.get(fingerprint(e164))
    if failed_at is None:
        return False
    return clock.now() - failed_at <= timedelta(days=settings.likely_to_fail_days)
