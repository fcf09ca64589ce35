"""A synthetic pilot: practices in both arms, their patients, and a mixed day of messages.

Everything is drawn from one seeded generator, so a demo run is reproducible. Records are
written half as JSON and half as Avro single-object encoding, as upstream systems would.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from appfirst.codecs.avro import AvroSingleObjectCodec
from appfirst.codecs.json_codec import JsonCodec
from appfirst.providers.scenario import Scenario
from appfirst.rules.contact import normalise_uk_mobile
from appfirst.rules.nhs_number import check_digit
from appfirst.topics.models import Eligibility, Event, Patient, PracticeSettings, SendRequest

INDIVIDUAL_TYPES = (
    "sms",
    "sms_with_response",
    "questionnaire",
    "self_book",
    "video_invite",
    "questionnaire_reminder",
    "confirmation",
)
INDIVIDUAL_WEIGHTS = (25, 30, 15, 12, 6, 6, 6)
BATCH_TYPES = (
    "questionnaire",
    "bp_monitoring_questionnaire",
    "appointment_reminder",
    "sms",
    "self_book",
)
BATCH_WEIGHTS = (30, 15, 25, 20, 10)


@dataclass(frozen=True)
class Record:
    topic: str  # contract name
    key: str
    value: bytes


def nhs_number(rng: random.Random) -> str:
    while True:
        first = f"{rng.randrange(400_000_000, 999_999_999):09d}"
        digit = check_digit(first)
        if digit is not None:
            return first + str(digit)


def _encode(event: Event, rng: random.Random) -> bytes:
    codec = JsonCodec(type(event)) if rng.random() < 0.5 else AvroSingleObjectCodec(type(event))
    return codec.encode(event)


@dataclass
class Pilot:
    practices: list[PracticeSettings]
    seed: int

    @property
    def scenario(self) -> Scenario:
        """The simulator's scenario of the same seed: its practices' registered patients."""
        return Scenario(seed=self.seed)

    @classmethod
    def make(cls, seed: int, per_arm: int = 6) -> Pilot:
        practices = []
        for i in range(per_arm):
            practices.append(
                PracticeSettings(
                    ods_code=f"T{i:04d}",
                    nhs_app_individual=True,
                    arm="treatment",
                    likely_to_fail_check=i % 2 == 0,
                )
            )
            practices.append(
                PracticeSettings(
                    ods_code=f"C{i:04d}",
                    nhs_app_individual=False,
                    arm="control",
                    likely_to_fail_check=i % 2 == 1,
                )
            )
        practices.append(PracticeSettings(ods_code="N0001", nhs_app_individual=True, arm=None))
        return cls(practices, seed)

    def setup_records(self) -> Iterator[Record]:
        rng = random.Random(self.seed)
        for practice in self.practices:
            yield Record("practice-settings", practice.ods_code, _encode(practice, rng))

    def messages(self, count: int) -> Iterator[list[Record]]:
        """Per message: its patient's eligibility (if any) then the send request; a few
        malformed records on the way, which must reach dead-letter."""
        rng = random.Random(self.seed + 1)
        for n in range(count):
            batch: list[Record] = []
            if n % 500 == 250:
                batch.append(Record("send-requests", f"bad-{n}", b"\x07not an event"))
            practice = rng.choice(self.practices)
            now = datetime.now(UTC)
            if rng.random() < 0.02:
                # Upstream knows of proxy-only access, which the patients report cannot say.
                patient_nhs = nhs_number(rng)
                elig = Eligibility(
                    nhs_number=patient_nhs,
                    has_nhs_app=True,
                    notifications_enabled=True,
                    proxy_only=True,
                    checked_at=now,
                )
                batch.append(Record("eligibility", patient_nhs, _encode(elig, rng)))
            else:
                # A registered patient: the eligibility sync and lookup know them.
                patient_nhs = rng.choice(self.scenario.roster(practice.ods_code))
            request = self._request(n, rng, practice, patient_nhs, now)
            value = _encode(request, rng)
            if n % 500 == 400:  # a corrupted NHS number: modulus-11 fails
                value = value.replace(patient_nhs.encode(), _corrupt(patient_nhs).encode())
            batch.append(Record("send-requests", request.message_id, value))
            yield batch

    def _request(
        self, n: int, rng: random.Random, practice: PracticeSettings, nhs: str, now: datetime
    ) -> SendRequest:
        batch = rng.random() < 0.2
        types, weights = (
            (BATCH_TYPES, BATCH_WEIGHTS) if batch else (INDIVIDUAL_TYPES, INDIVIDUAL_WEIGHTS)
        )
        message_type = rng.choices(types, weights)[0]
        mobile_roll = rng.random()
        mobile = (
            None
            if mobile_roll < 0.02
            else "020 7946 0000"
            if mobile_roll < 0.04
            else uk_mobile(rng)
        )
        email = f"patient{n}@example.org" if rng.random() < (0.15 if batch else 0.06) else None
        return SendRequest(
            message_id=f"demo-{self.seed}-{n:06d}",
            requested_at=now,
            ods_code=practice.ods_code,
            organisation_type="other" if rng.random() < 0.02 else "gp",
            nation="wales" if rng.random() < 0.02 else "england",
            origin="batch" if batch else "individual",
            batch_id=f"batch-{n // 100}" if batch else None,
            message_type=message_type,
            body=_body(message_type, rng),
            patient=Patient(
                nhs_number=nhs, mobile=mobile, email=email, deceased=rng.random() < 0.005
            ),
            email_selected=email is not None and not batch and rng.random() < 0.5,
            number_overridden=rng.random() < 0.02,
        )


def uk_mobile(rng: random.Random) -> str:
    """A random number that is a valid UK mobile by the numbering plan."""
    while True:
        candidate = f"07{rng.randrange(400, 999)} {rng.randrange(100000, 999999)}"
        if normalise_uk_mobile(candidate):
            return candidate


def _corrupt(nhs: str) -> str:
    return nhs[:9] + str((int(nhs[9]) + 1) % 10)


def _body(message_type: str, rng: random.Random) -> str:
    base = {
        "self_book": "Please book your appointment using this link: https://example.org/b/",
        "questionnaire": "Please complete this short questionnaire: https://example.org/q/",
        "bp_monitoring_questionnaire": "Please send your home blood pressure readings: "
        "https://example.org/bp/",
        "sms_with_response": "Your GP would like to hear from you. Reply here: "
        "https://example.org/r/",
    }.get(message_type, "A message from your GP practice about your care. ")
    tail = "x" * rng.randrange(0, 200) if rng.random() < 0.3 else "ok"
    if rng.random() < 0.05:
        tail += " — thank you 😊"  # forces UCS-2 fragments
    return base + tail
