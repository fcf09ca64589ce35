"""Batch messaging's pure parts: reading a practice's CSV patient list, the review of who
cannot be contacted, and when each patient of a scheduled or staggered batch is released.

The CSV is read row by row (``read_rows`` takes any iterable of lines), so a list of
100,000 patients never sits in memory; the review keeps only the NHS numbers already seen,
to find duplicate rows. Which channel a patient gets is not decided here: the routing rules
(``rules/routing.py``) are the one source of truth, and the review asks them what they
would decide for the SMS path, the fail-safe every batch message must be able to take.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from appfirst.errors import AppfirstError
from appfirst.rules.nhs_number import is_valid_nhs_number
from appfirst.rules.routing import Deadlines, FailedRecently, route
from appfirst.topics.models import MessageType, OrganisationType, PracticeSettings, SendRequest


class BatchFileError(AppfirstError):
    """The file cannot be read as a patient list at all (as opposed to a bad row)."""


# Header names as EPR exports (EMIS, SystmOne, Vision) and hand-made lists spell them,
# compared lower-case with everything but letters and digits removed.
HEADERS: dict[str, tuple[str, ...]] = {
    "nhs_number": ("nhsnumber", "nhsno", "nhs", "nhsnum", "patientnhsnumber"),
    "mobile": (
        "mobile",
        "mobilenumber",
        "mobilephone",
        "mobiletelephone",
        "mobiletel",
        "mobileno",
        "telephonemobile",
        "phone",
        "phonenumber",
        "telephone",
        "telephonenumber",
        "contactnumber",
    ),
    "email": ("email", "emailaddress", "mail"),
    "date_of_birth": ("dateofbirth", "dob", "birthdate", "birthday"),
    "name": ("name", "patientname", "fullname"),
    "first_name": ("firstname", "forename", "forenames", "givenname"),
    "last_name": ("lastname", "surname", "familyname"),
    "deceased": ("deceased", "isdeceased", "dateofdeath", "deceaseddate"),
}
_ALIASES = {alias: field for field, aliases in HEADERS.items() for alias in aliases}
CONTACT_FIELDS = ("mobile", "email")

# Why a row cannot be contacted, in the words of the batch messaging page (and two of ours).
REASONS: dict[str, str] = {
    "invalid_nhs_number": "Invalid NHS number",
    "duplicate_row": "Duplicate row",
    "deceased": "Patient deceased",
    "unable_to_retrieve_contact_details": "Unable to retrieve contact details",
    "contact_details_not_provided": "Contact details not provided",
    "not_uk_phone_number": "Not a UK phone number",
    "likely_to_fail": "Mobile number is likely to fail",
}
# The routing rules' ``none`` reasons, as the review names them.
_FROM_ROUTING = {
    "deceased": "deceased",
    "contact_details_missing": "contact_details_not_provided",
    "not_uk_mobile": "not_uk_phone_number",
    "likely_to_fail": "likely_to_fail",
}
# Rows without a mobile the SMS path could use: the status page's "patients without a
# valid mobile number".
WITHOUT_VALID_MOBILE = frozenset({"contact_details_not_provided", "not_uk_phone_number"})
_TRUE = frozenset({"y", "yes", "true", "1", "deceased"})


def _header_key(raw: str) -> str:
    return re.sub(r"[^a-z0-9]", "", raw.replace("\ufeff", "").lower())


@dataclass(frozen=True)
class Columns:
    """Where each field is in the file's rows."""

    index: dict[str, int]

    @classmethod
    def from_header(cls, header: list[str]) -> Columns:
        index: dict[str, int] = {}
        for i, raw in enumerate(header):
            field = _ALIASES.get(_header_key(raw))
            if field is not None and field not in index:
                index[field] = i
        if "nhs_number" not in index:
            raise BatchFileError(
                "no NHS number column: the first row must name the columns "
                f"(found {', '.join(repr(h) for h in header[:8]) or 'nothing'})"
            )
        return cls(index)

    @property
    def has_contact(self) -> bool:
        return any(f in self.index for f in CONTACT_FIELDS)

    def get(self, row: list[str], field: str) -> str | None:
        i = self.index.get(field)
        if i is None or i >= len(row):
            return None
        value = row[i].strip()
        return value or None


@dataclass(frozen=True)
class PatientRow:
    line: int  # in the file, the header being line 1
    nhs_number: str
    mobile: str | None
    email: str | None
    date_of_birth: str | None
    name: str | None
    deceased: bool


def read_rows(lines: Iterable[str]) -> tuple[Columns, Iterator[PatientRow]]:
    """The file's columns, and its patients one by one. ``lines``: text lines (a file
    opened with ``encoding="utf-8-sig"`` and ``newline=""``, or decoded upload chunks)."""
    reader = csv.reader(iter(lines))
    try:
        header = next(reader)
    except StopIteration:
        raise BatchFileError("the file is empty") from None
    except csv.Error as exc:
        raise BatchFileError(f"not a CSV file: {exc}") from exc
    columns = Columns.from_header(header)

    def rows() -> Iterator[PatientRow]:
        try:
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank lines, as spreadsheets leave at the end
                yield _patient(columns, row, reader.line_num)
        except csv.Error as exc:
            raise BatchFileError(f"line {reader.line_num}: {exc}") from exc

    return columns, rows()


def _patient(columns: Columns, row: list[str], line: int) -> PatientRow:
    nhs = re.sub(r"[\s-]", "", columns.get(row, "nhs_number") or "")
    name = columns.get(row, "name")
    if name is None:
        parts = [columns.get(row, "first_name"), columns.get(row, "last_name")]
        name = " ".join(p for p in parts if p) or None
    deceased = columns.get(row, "deceased")
    return PatientRow(
        line=line,
        nhs_number=nhs,
        mobile=columns.get(row, "mobile"),
        email=columns.get(row, "email"),
        date_of_birth=columns.get(row, "date_of_birth"),
        name=name,
        deceased=deceased is not None and (deceased.lower() in _TRUE or _is_date(deceased)),
    )


def _is_date(value: str) -> bool:
    # A "date of death" column holds a date for the deceased and nothing for the living.
    return bool(re.fullmatch(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}", value))


@dataclass(frozen=True)
class BatchPlan:
    """What every message of the batch shares."""

    batch_id: str
    ods_code: str
    message_type: MessageType
    body: str
    organisation_type: OrganisationType = "gp"


def message_id(batch_id: str, seq: int) -> str:
    """The message id of the batch's ``seq``-th contactable patient: stable, so a batch
    released twice (a crash mid-release) routes and sends each patient once."""
    return f"{batch_id}.{seq:06d}"


@dataclass(frozen=True)
class Reviewed:
    row: PatientRow
    reason: str | None  # None: contactable
    request: SendRequest | None  # the send request of a contactable row


def review(
    rows: Iterable[PatientRow],
    columns: Columns,
    plan: BatchPlan,
    *,
    practice: PracticeSettings | None,
    now: datetime,
    failed_recently: FailedRecently,
) -> Iterator[Reviewed]:
    """Each row, with why it cannot be contacted or the send request it becomes.

    Order of checks: the NHS number (a row without a valid one is no patient), duplicates
    (the first row of a patient counts), then what the routing rules would decide for the
    SMS path: deceased, no contact details, not a UK mobile, likely to fail. A file with
    no mobile or email column at all holds no contact details to use: "unable to retrieve
    contact details", since this service cannot look them up in the clinical system.
    """
    seen: set[int] = set()
    seq = 0
    for row in rows:
        if not is_valid_nhs_number(row.nhs_number):
            yield Reviewed(row, "invalid_nhs_number", None)
            continue
        number = int(row.nhs_number)
        if number in seen:
            yield Reviewed(row, "duplicate_row", None)
            continue
        seen.add(number)
        request = SendRequest.model_validate(
            {
                "message_id": message_id(plan.batch_id, seq),
                "requested_at": now,
                "ods_code": plan.ods_code,
                "organisation_type": plan.organisation_type,
                "origin": "batch",
                "batch_id": plan.batch_id,
                "message_type": plan.message_type,
                "body": plan.body,
                "patient": {
                    "nhs_number": row.nhs_number,
                    "mobile": row.mobile,
                    "email": row.email,
                    "deceased": row.deceased,
                },
            }
        )
        if not row.deceased and not columns.has_contact:
            yield Reviewed(row, "unable_to_retrieve_contact_details", None)
            continue
        # Eligibility unknown: the SMS path, which every batch message must be able to take.
        decision = route(
            request,
            practice,
            None,
            now=now,
            deadlines=Deadlines(),
            failed_recently=failed_recently,
        )
        if decision.channel == "none":
            yield Reviewed(row, _FROM_ROUTING[decision.reason], None)
            continue
        seq += 1
        yield Reviewed(row, None, request)


NON_CONTACTABLE_HEADER = ("Row", "NHS number", "Name", "Date of birth", "Reason")


def non_contactable_row(reviewed: Reviewed) -> tuple[str, ...]:
    """One line of the downloadable list of patients who cannot be contacted."""
    row = reviewed.row
    reason = REASONS[reviewed.reason] if reviewed.reason else ""
    return (str(row.line), row.nhs_number, row.name or "", row.date_of_birth or "", reason)


@dataclass(frozen=True)
class Schedule:
    """When each of a batch's contactable patients is released (epoch seconds).

    Not staggered: everyone at ``send_at``. Staggered: ``count`` patients at ``send_at``,
    ``count`` more every ``every`` seconds after, in the list's order.
    """

    send_at: float
    count: int | None = None
    every: float | None = None

    def __post_init__(self) -> None:
        if (self.count is None) != (self.every is None):
            raise ValueError("a stagger needs both a count and a period")
        if self.count is not None and self.count < 1:
            raise ValueError("a stagger releases at least one patient per period")
        if self.every is not None and not (self.every > 0 and math.isfinite(self.every)):
            raise ValueError("a stagger's period must be positive")

    def released_by(self, now: float, total: int) -> int:
        """How many of ``total`` patients are due by ``now``."""
        if now < self.send_at:
            return 0
        if self.count is None or self.every is None:
            return total
        periods = int((now - self.send_at) // self.every) + 1
        return min(total, periods * self.count)

    def release_at(self, seq: int) -> float:
        if self.count is None or self.every is None:
            return self.send_at
        return self.send_at + (seq // self.count) * self.every

    def next_release(self, released: int, total: int) -> float | None:
        """When the next patient after the first ``released`` is due, or None if none is."""
        return self.release_at(released) if released < total else None


def parse_period(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``1d`` or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    if not match:
        raise ValueError(f"not a period: {text!r} (say 30s, 15m, 2h or 1d)")
    value = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if value <= 0:
        raise ValueError("a period must be positive")
    return value


# --- a batch's progress, as the releaser keeps it ----------------------------------------


@dataclass(frozen=True)
class Progress:
    """One batch in the releaser's table: its plan, how far it is released, and (from the
    marks of its messages, not stored here) what has settled.

    ``plan`` is the plan record's fields (JSON), None until it comes. The upload writes
    every patient before the plan, on one partition, so a batch with its plan is whole.
    """

    batch_id: str
    partition: int
    released: int = 0  # patients 0..released-1 handed to routing
    plan: dict[str, Any] | None = None
    cancelled_at: float | None = None
    revoked_at: float | None = None
    finished_at: float | None = None  # first seen done or cancelled: its rows end 8 days on
    delivered: int = 0
    failed: int = 0
    saved: int = 0
    settled: int = 0  # messages with a final outcome (delivered, failed, sent, not sent)
    without_valid_mobile: int = 0  # found at routing, beyond the review's count

    def counted(self, counts: Mapping[str, int]) -> Progress:
        """With the counters its messages' marks add up to."""
        return replace(
            self,
            delivered=counts.get("delivered", 0),
            failed=counts.get("failed", 0),
            saved=counts.get("saved", 0),
            settled=counts.get("settled", 0),
            without_valid_mobile=counts.get("without_valid_mobile", 0),
        )

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        return cls(**data)

    @property
    def contactable(self) -> int:
        return int(self.plan["contactable"]) if self.plan else 0

    def schedule(self) -> Schedule | None:
        if self.plan is None:
            return None
        return Schedule(
            send_at=float(self.plan["send_at"]),
            count=self.plan.get("stagger_count"),
            every=self.plan.get("stagger_every_seconds"),
        )

    def due(self, now: float) -> int:
        """How many patients should have been released by ``now`` (never fewer than have)."""
        schedule = self.schedule()
        if schedule is None or self.cancelled_at is not None:
            return self.released
        return max(self.released, schedule.released_by(now, self.contactable))

    def status(self, now: float) -> str | None:
        """Scheduled, Sending, Done or Cancelled (None: the upload is not complete)."""
        if self.plan is None:
            return None
        if self.cancelled_at is not None:
            return "cancelled"
        if self.released == 0 and self.contactable > 0:
            return "scheduled"
        if self.released < self.contactable or self.settled < self.contactable:
            return "sending"
        schedule = self.schedule()
        if self.contactable == 0 and schedule is not None and now < schedule.send_at:
            return "scheduled"
        return "done"

    def next_release_at(self) -> float | None:
        schedule = self.schedule()
        if schedule is None or self.cancelled_at is not None:
            return None
        return schedule.next_release(self.released, self.contactable)
