"""A batch from a CSV patient list: the review, and the records that make the batch.

Shared by ``appfirst batch send`` (which writes through its own producer) and the worker's
``POST /batches`` (through the worker's). ``prepare`` streams: it yields each patient's
record as its row is read, and the plan last, once the counts are known.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from appfirst.rules import batch as rules
from appfirst.rules.contact import SMS_MAX_CHARACTERS, number_fingerprint, sms_length
from appfirst.rules.routing import FailedRecently
from appfirst.settings import Settings
from appfirst.topics.models import BatchEvent, MessageType, OrganisationType, PracticeSettings


def new_batch_id() -> str:
    return f"b-{uuid.uuid4().hex[:16]}"


@dataclass
class Summary:
    """What the review found; complete once ``prepare``'s records are all consumed."""

    batch_id: str
    patient_list: int = 0
    contactable: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    non_contactable: list[tuple[str, ...]] = field(default_factory=list)  # CSV lines

    @property
    def without_valid_mobile(self) -> int:
        return sum(self.reasons[r] for r in rules.WITHOUT_VALID_MOBILE)

    def as_json(self) -> dict[str, object]:
        return {
            "batch_id": self.batch_id,
            "patient_list": self.patient_list,
            "contactable": self.contactable,
            "non_contactable": sum(self.reasons.values()),
            "without_valid_mobile": self.without_valid_mobile,
            "reasons": {rules.REASONS[k]: v for k, v in sorted(self.reasons.items())},
        }


@dataclass(frozen=True)
class Request:
    """What the practice asked for."""

    ods_code: str
    message_type: MessageType
    body: str
    send_at: datetime
    stagger_count: int | None = None
    stagger_every_seconds: float | None = None
    organisation_type: OrganisationType = "gp"
    batch_id: str = field(default_factory=new_batch_id)

    def check(self) -> None:
        """Refuse, before a row is read, what no patient could be sent."""
        rules.Schedule(0.0, self.stagger_count, self.stagger_every_seconds)
        if not self.body.strip():
            raise rules.BatchFileError("the message is empty")
        if len(self.body) > 5000:
            raise rules.BatchFileError("the message is longer than 5,000 characters")
        # Any patient may need an SMS (theirs, or the NHS App message's backup).
        if sms_length(self.body) > SMS_MAX_CHARACTERS:
            raise rules.BatchFileError(
                f"the message is too long for SMS ({sms_length(self.body)} > "
                f"{SMS_MAX_CHARACTERS} characters)"
            )


def prepare(
    lines: Iterable[str],
    request: Request,
    *,
    practice: PracticeSettings | None,
    failed_recently: FailedRecently,
    now: datetime,
) -> tuple[Summary, Iterator[BatchEvent]]:
    """Review the list and make its records: a ``patient`` per contactable row, a
    ``non_contactable`` per other row, then the ``plan``."""
    request.check()
    columns, rows = rules.read_rows(lines)
    plan = rules.BatchPlan(
        request.batch_id,
        request.ods_code,
        request.message_type,
        request.body,
        request.organisation_type,
    )
    summary = Summary(request.batch_id)

    def records() -> Iterator[BatchEvent]:
        reviewed = rules.review(
            rows, columns, plan, practice=practice, now=now, failed_recently=failed_recently
        )
        for r in reviewed:
            summary.patient_list += 1
            if r.request is None:
                assert r.reason is not None
                summary.reasons[r.reason] += 1
                summary.non_contactable.append(rules.non_contactable_row(r))
                yield BatchEvent.model_validate(
                    {
                        "batch_id": request.batch_id,
                        "kind": "non_contactable",
                        "occurred_at": now,
                        "line": r.row.line,
                        "nhs_number": r.row.nhs_number or None,
                        "name": r.row.name,
                        "date_of_birth": r.row.date_of_birth,
                        "reason": r.reason,
                    }
                )
                continue
            patient = r.request.patient
            yield BatchEvent.model_validate(
                {
                    "batch_id": request.batch_id,
                    "kind": "patient",
                    "occurred_at": now,
                    "seq": summary.contactable,
                    "line": r.row.line,
                    "nhs_number": patient.nhs_number,
                    "mobile": patient.mobile,
                    "email": patient.email,
                }
            )
            summary.contactable += 1
        yield BatchEvent.model_validate(
            {
                "batch_id": request.batch_id,
                "kind": "plan",
                "occurred_at": now,
                "ods_code": request.ods_code,
                "organisation_type": request.organisation_type,
                "message_type": request.message_type,
                "body": request.body,
                "patient_list": summary.patient_list,
                "contactable": summary.contactable,
                "non_contactable": sum(summary.reasons.values()),
                "without_valid_mobile": summary.without_valid_mobile,
                "send_at": request.send_at,
                "stagger_count": request.stagger_count,
                "stagger_every_seconds": request.stagger_every_seconds,
            }
        )

    return summary, records()


class Contactability:
    """The practice's settings and the numbers that failed recently, read from their topics
    by a process outside the worker (the CLI's review)."""

    def __init__(self, settings: Settings) -> None:
        from appfirst.streams.broadcast import BroadcastTable
        from appfirst.topics.catalogue import FAILED_NUMBERS

        self.settings = settings
        self._key = settings.number_hash_key.get_secret_value().encode()
        self.practices: BroadcastTable[bytes] = BroadcastTable(
            settings, settings.topic("practice-settings"), lambda _k, v, _c: v
        )
        self.failed: BroadcastTable[datetime] = BroadcastTable(
            settings, settings.topic(FAILED_NUMBERS), _latest_failure
        )

    async def load(self, timeout: float = 30.0) -> None:
        tasks = [asyncio.ensure_future(t.run()) for t in (self.practices, self.failed)]
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(self.practices.ready.wait(), self.failed.ready.wait())
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def practice(self, ods_code: str) -> PracticeSettings | None:
        from appfirst.codecs import Decoder

        raw = self.practices.get(ods_code)
        return Decoder(PracticeSettings).decode(raw) if raw else None

    def failed_recently(self, now: datetime) -> FailedRecently:
        window = timedelta(days=self.settings.likely_to_fail_days)

        def check(e164: str) -> bool:
            at = self.failed.get(number_fingerprint(e164, self._key))
            return at is not None and now - at <= window

        return check


def _latest_failure(_: str, value: bytes, current: datetime | None) -> datetime | None:
    import json

    failed_at = datetime.fromisoformat(json.loads(value)["failed_at"])
    return failed_at if current is None or failed_at > current else None
