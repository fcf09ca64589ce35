"""Synthetic traffic for the benchmarks, encoded once, before any clock starts.

A message's life: its send request; for the half of patients with the NHS App and
notifications on (in NHS App practices) an NHS App delivery receipt, a read for most of
them and a response for some; for the others an SMS delivery receipt and sometimes a
response. Everything is seeded, so two runs load the same bytes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from appfirst.codecs.json_codec import JsonCodec
from appfirst.rules.nhs_number import check_digit
from appfirst.topics.models import (
    DeliveryReceipt,
    Dispatch,
    Eligibility,
    Event,
    Patient,
    PracticeSettings,
    ReadReceipt,
    Response,
    SendRequest,
)

from .harness import Record

PRACTICES = 40
TYPES = ("sms_with_response", "questionnaire", "self_book", "sms", "confirmation")


def _encode(event: Event) -> bytes:
    return JsonCodec(type(event)).encode(event)


def _nhs(n: int) -> str:
    while True:
        first = f"{(n * 7919 + 400_000_000) % 600_000_000 + 400_000_000:09d}"
        digit = check_digit(first)
        if digit is not None:
            return first + str(digit)
        n += 1_000_003


@dataclass
class Traffic:
    """Every topic's records for ``messages`` messages."""

    messages: int
    seed: int = 7
    start: datetime = field(default_factory=lambda: datetime.now(UTC))
    topics: dict[str, list[Record]] = field(default_factory=dict)

    def build(self) -> Traffic:
        rng = random.Random(self.seed)
        out: dict[str, list[Record]] = {
            t: []
            for t in (
                "practice-settings",
                "eligibility",
                "send-requests",
                "delivery-receipts",
                "read-receipts",
                "responses",
            )
        }
        practices = []
        for i in range(PRACTICES):
            arm = "treatment" if i % 2 == 0 else "control"
            p = PracticeSettings(
                ods_code=f"B{i:05d}", nhs_app_individual=arm == "treatment", arm=arm
            )
            practices.append(p)
            out["practice-settings"].append((p.ods_code.encode(), _encode(p), None))
        patients = max(1, self.messages // 2)
        app_users = set()
        for n in range(patients):
            if n % 2 == 0:
                nhs = _nhs(n)
                app_users.add(nhs)
                e = Eligibility(
                    nhs_number=nhs,
                    has_nhs_app=True,
                    notifications_enabled=True,
                    checked_at=self.start,
                )
                out["eligibility"].append((nhs.encode(), _encode(e), None))
        for m in range(self.messages):
            practice = practices[m % PRACTICES]
            nhs = _nhs(rng.randrange(patients))
            mid = f"bench-{self.seed}-{m:08d}"
            at = self.start + timedelta(milliseconds=m)
            message_type = rng.choice(TYPES)
            req = SendRequest(
                message_id=mid,
                requested_at=at,
                ods_code=practice.ods_code,
                origin="individual",
                message_type=message_type,  # type: ignore[arg-type]
                body="Your GP practice has sent you a message. Please reply.",
                patient=Patient(nhs_number=nhs, mobile="07911 123456"),
            )
            out["send-requests"].append((mid.encode(), _encode(req), None))
            by_app = practice.nhs_app_individual and nhs in app_users
            channel = "nhs_app" if by_app else "sms"
            delivered = DeliveryReceipt(
                message_id=mid, channel=channel, status="delivered", occurred_at=at
            )
            out["delivery-receipts"].append((mid.encode(), _encode(delivered), None))
            if by_app and rng.random() < 0.7:
                read = ReadReceipt(message_id=mid, read_at=at + timedelta(minutes=10))
                out["read-receipts"].append((mid.encode(), _encode(read), None))
            if rng.random() < 0.3:
                resp = Response(message_id=mid, responded_at=at + timedelta(minutes=20))
                out["responses"].append((mid.encode(), _encode(resp), None))
        self.topics = out
        return self

    @property
    def external_events(self) -> int:
        return sum(len(v) for v in self.topics.values())


def pending_dispatches(
    count: int, due_in: tuple[float, float], now: datetime, deadline: float, prefix: str
) -> Iterator[Record]:
    """NHS App dispatches whose fallback falls due evenly between ``due_in`` seconds from
    ``now``; the tracker's deadline is ``deadline`` seconds after dispatch."""
    low, high = due_in
    for n in range(count):
        mid = f"{prefix}-{n:08d}"
        due = now + timedelta(seconds=low + (high - low) * n / max(1, count - 1))
        d = Dispatch(
            message_id=mid,
            channel="nhs_app",
            reason="nhs_app_enabled",
            dispatched_at=due - timedelta(seconds=deadline),
            ods_code="B00000",
            arm="treatment",
            origin="individual",
            message_type="sms_with_response",
            fallback_due_at=due,
            mobile="+447911123456",
            body="Your GP practice has sent you a message.",
        )
        yield mid.encode(), _encode(d), None


def paced_requests(count: int, seed: int = 11) -> Iterator[tuple[bytes, SendRequest]]:
    """Send requests for the latency run; encoded as they go, since each is stamped."""
    rng = random.Random(seed)
    for m in range(count):
        mid = f"lat-{m:08d}"
        yield (
            mid.encode(),
            SendRequest(
                message_id=mid,
                requested_at=datetime.now(UTC),
                ods_code=f"B{rng.randrange(PRACTICES):05d}",
                origin="individual",
                message_type="sms_with_response",
                body="Your GP practice has sent you a message. Please reply.",
                patient=Patient(nhs_number=_nhs(rng.randrange(1_000_000)), mobile="07911 123456"),
            ),
        )


# A national day, as NHS England reports it: about 3.4 million NHS App messages; the SMS
# share is the patients without the app (about as many again).
NHS_APP_SHARE = 0.5


def recorded_day(messages: int, start: datetime) -> dict[str, list[Record]]:
    """A day's dispatches and NHS App receipts, each topic in time order: half by NHS App
    (70% read, mostly within the hour; the rest fall due), half by SMS."""
    rng = random.Random(5)
    day = start.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    out: dict[str, list[tuple[float, Record]]] = {
        "dispatches": [],
        "delivery-receipts": [],
        "read-receipts": [],
    }
    for m in range(messages):
        mid = f"day-{m:08d}"
        at = day + timedelta(seconds=86400 * m / messages)
        by_app = rng.random() < NHS_APP_SHARE
        d = Dispatch(
            message_id=mid,
            channel="nhs_app" if by_app else "sms",
            reason="nhs_app_enabled" if by_app else "no_nhs_app",
            dispatched_at=at,
            ods_code=f"B{m % PRACTICES:05d}",
            arm=None,
            origin="individual",
            message_type="sms_with_response",
            mobile="+447911123456",
            body="Your GP practice has sent you a message.",
        )
        out["dispatches"].append((at.timestamp(), (mid.encode(), _encode(d), None)))
        delivered_at = at + timedelta(seconds=5)
        receipt = DeliveryReceipt(
            message_id=mid,
            channel="nhs_app" if by_app else "sms",
            status="delivered",
            occurred_at=delivered_at,
        )
        out["delivery-receipts"].append(
            (delivered_at.timestamp(), (mid.encode(), _encode(receipt), None))
        )
        if by_app and rng.random() < 0.7:
            read_at = at + timedelta(seconds=rng.expovariate(1 / 1500))
            read = ReadReceipt(message_id=mid, read_at=read_at)
            out["read-receipts"].append((read_at.timestamp(), (mid.encode(), _encode(read), None)))
    return {topic: [r for _, r in sorted(rows, key=lambda x: x[0])] for topic, rows in out.items()}
