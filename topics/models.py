"""The contract's events as pydantic models.

The Avro schemas beside this module (``schemas/*.avsc``) are the source of truth for field
types; ``tests/unit/topics/test_models_match_schemas.py`` keeps the two in step. Fields
beyond the contract are additions the contract allows (it may be extended, never broken).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from appfirst.rules.nhs_number import is_valid_nhs_number


def _to_utc_millis(value: datetime) -> datetime:
    # Avro carries timestamp-millis, so every codec agrees only if we keep milliseconds.
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _check_nhs_number(value: str) -> str:
    if not is_valid_nhs_number(value):
        raise ValueError("NHS number fails the modulus-11 check")
    return value


Timestamp = Annotated[AwareDatetime, AfterValidator(_to_utc_millis)]
MessageId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
NhsNumber = Annotated[str, Field(pattern=r"^[0-9]{10}$"), AfterValidator(_check_nhs_number)]

OrganisationType = Literal["gp", "other"]
Nation = Literal["england", "wales", "scotland", "northern_ireland"]
Origin = Literal["individual", "batch"]
MessageType = Literal[
    "sms",
    "sms_with_response",
    "questionnaire",
    "bp_monitoring_questionnaire",
    "self_book",
    "video_invite",
    "appointment_reminder",
    "questionnaire_reminder",
    "confirmation",
    "two_factor",
]
SMS_ONLY_TYPES: frozenset[str] = frozenset({"questionnaire_reminder", "confirmation", "two_factor"})
Arm = Literal["treatment", "control"]
Channel = Literal["nhs_app", "sms", "email", "none"]
Reason = Literal[
    "email_selected",
    "email_in_list",
    "nhs_app_enabled",
    "sms_only_type",
    "number_overridden",
    "integration_off",
    "not_gp",
    "not_england",
    "no_nhs_app",
    "notifications_off",
    "proxy_only",
    "eligibility_unknown",
    "deceased",
    "contact_details_missing",
    "not_uk_mobile",
    "likely_to_fail",
]
ReceiptStatus = Literal[
    "delivered",
    "notified",
    "unnotified",
    "rejected",
    "failed",
    "permanent_failure",
    "temporary_failure",
    "technical_failure",
]
Leg = Literal["primary", "fallback"]
FallbackReason = Literal["unread", "unnotified", "rejected", "failed"]
MetricKind = Literal["arm_rate", "comparison", "trend"]


class Event(BaseModel):
    """Base of every event: immutable, unknown fields ignored (producers may be newer)."""

    model_config = ConfigDict(
        frozen=True, extra="ignore", ser_json_bytes="base64", val_json_bytes="base64"
    )


class Patient(Event):
    nhs_number: NhsNumber
    mobile: str | None = None
    email: str | None = None
    deceased: bool = False


class SendRequest(Event):
    message_id: MessageId
    requested_at: Timestamp
    ods_code: str = Field(min_length=1, max_length=16)
    organisation_type: OrganisationType = "gp"
    nation: Nation = "england"
    origin: Origin
    batch_id: str | None = None
    message_type: MessageType
    body: str = Field(min_length=1, max_length=5000)
    patient: Patient
    email_selected: bool = False
    number_overridden: bool = False


class PracticeSettings(Event):
    ods_code: str = Field(min_length=1, max_length=16)
    nhs_app_individual: bool = False
    arm: Arm | None = None
    likely_to_fail_check: bool = False


class Eligibility(Event):
    nhs_number: NhsNumber
    has_nhs_app: bool
    notifications_enabled: bool
    proxy_only: bool = False
    checked_at: Timestamp


class Dispatch(Event):
    message_id: MessageId
    channel: Channel
    reason: Reason
    dispatched_at: Timestamp
    ods_code: str
    arm: Arm | None
    origin: Origin
    message_type: MessageType
    fallback_due_at: Timestamp | None = None
    sms_fragments: int | None = None
    # Additions: what the dispatcher and the tracker need to act without a second lookup.
    batch_id: str | None = None
    requested_at: Timestamp | None = None
    nhs_number: str | None = None
    mobile: str | None = None
    email: str | None = None
    body: str | None = None


class DeliveryReceipt(Event):
    message_id: MessageId
    channel: Literal["nhs_app", "sms", "email"]
    status: ReceiptStatus
    occurred_at: Timestamp
    provider_reference: str | None = None
    leg: Leg = "primary"


class ReadReceipt(Event):
    message_id: MessageId
    read_at: Timestamp


# The patient responses page: up to 5 files of at most 7 MB, of these types.
RESPONSE_MAX_FILES = 5
RESPONSE_MAX_FILE_BYTES = 7 * 1024 * 1024
RESPONSE_FILE_TYPES = frozenset({"jpg", "jpeg", "gif", "png", "pdf", "doc", "docx"})


class ResponseFile(Event):
    name: str = Field(min_length=1, max_length=255)
    size_bytes: int = Field(ge=0)

    @model_validator(mode="after")
    def _allowed(self) -> ResponseFile:
        kind = self.name.rsplit(".", 1)[-1].lower() if "." in self.name else ""
        if kind not in RESPONSE_FILE_TYPES:
            allowed = ", ".join(sorted(RESPONSE_FILE_TYPES))
            raise ValueError(f"file type {kind or '(none)'!r} is not accepted ({allowed})")
        if self.size_bytes > RESPONSE_MAX_FILE_BYTES:
            raise ValueError(f"a file is over 7 MB ({self.size_bytes:,} bytes)")
        return self


class Response(Event):
    message_id: MessageId
    responded_at: Timestamp
    attachments: int = Field(default=0, ge=0, le=RESPONSE_MAX_FILES)
    files: list[ResponseFile] = Field(default_factory=list, max_length=RESPONSE_MAX_FILES)

    @model_validator(mode="after")
    def _files_counted(self) -> Response:
        if self.files and self.attachments not in (0, len(self.files)):
            raise ValueError(f"attachments says {self.attachments} but {len(self.files)} files")
        return self


class Fallback(Event):
    message_id: MessageId
    reason: FallbackReason
    due_at: Timestamp
    emitted_at: Timestamp
    # What the SMS dispatcher needs to send it.
    fallback_id: str
    ods_code: str
    arm: Arm | None = None
    origin: Origin
    message_type: MessageType
    mobile: str | None = None
    body: str | None = None
    sms_fragments: int | None = None


class PilotMetric(Event):
    kind: MetricKind
    key: str
    arm: Arm | None = None
    message_type: str | None = None
    horizon_seconds: int | None = None
    sent: int | None = None
    responded: int | None = None
    response_rate: float | None = None
    read: int | None = None
    fallbacks: int | None = None
    treatment_rate: float | None = None
    control_rate: float | None = None
    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    method: str | None = None
    day: date | None = None
    # comparison, added in schema v2 (optional: v1 records still read)
    naive_ci_low: float | None = None
    naive_ci_high: float | None = None
    naive_p_value: float | None = None
    icc: float | None = None
    design_effect: float | None = None
    srm_p_value: float | None = None
    treatment_practices: int | None = None
    control_practices: int | None = None
    treatment_sent: int | None = None
    control_sent: int | None = None
    updated_at: Timestamp

    @model_validator(mode="after")
    def _fields_of_kind(self) -> PilotMetric:
        required = {
            "arm_rate": (
                "arm",
                "message_type",
                "horizon_seconds",
                "sent",
                "responded",
                "read",
                "fallbacks",
            ),
            "comparison": ("message_type", "horizon_seconds", "method"),
            "trend": ("arm", "message_type", "day", "sent", "read", "fallbacks", "responded"),
        }[self.kind]
        missing = [name for name in required if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{self.kind} metric lacks {', '.join(missing)}")
        return self


class DeadLetter(Event):
    source_topic: str
    partition: int
    offset: int
    key: str | None
    original: bytes
    reason: str
    agent: str
    occurred_at: Timestamp


# --- batch messaging (an extension of the contract) -------------------------------------

# Short enough that "<batch_id>.<6-digit seq>" is still a message id.
BatchId = Annotated[str, Field(min_length=1, max_length=56, pattern=r"^[A-Za-z0-9._:-]+$")]
BatchEventKind = Literal["patient", "non_contactable", "plan", "cancel", "revoke_links", "saved"]
NonContactableReason = Literal[
    "invalid_nhs_number",
    "duplicate_row",
    "deceased",
    "unable_to_retrieve_contact_details",
    "contact_details_not_provided",
    "not_uk_phone_number",
    "likely_to_fail",
]
BatchState = Literal["scheduled", "sending", "done", "cancelled"]

# Every field a plan record may carry (the required ones are below).
BATCH_PLAN_FIELDS = (
    "ods_code",
    "organisation_type",
    "message_type",
    "body",
    "patient_list",
    "contactable",
    "non_contactable",
    "without_valid_mobile",
    "send_at",
    "stagger_count",
    "stagger_every_seconds",
)
_BATCH_PLAN_OPTIONAL = ("organisation_type", "stagger_count", "stagger_every_seconds")
_BATCH_FIELDS: dict[str, tuple[str, ...]] = {
    "patient": ("seq", "line", "nhs_number"),
    "non_contactable": ("line", "reason"),
    "plan": tuple(f for f in BATCH_PLAN_FIELDS if f not in _BATCH_PLAN_OPTIONAL),
    "cancel": (),
    "revoke_links": (),
    "saved": ("message_id",),
}


class BatchEvent(Event):
    """One record of a batch on ``batches``, keyed by ``batch_id`` so that a batch's records
    stay in order on one partition: its patients (each contactable row of the list), the
    rows that cannot be contacted, then its plan (written last: a batch whose upload died
    half way has no plan and is never sent); later a cancel, a link revocation, and a
    ``saved`` per message written to the clinical record."""

    batch_id: BatchId
    kind: BatchEventKind
    occurred_at: Timestamp
    # patient, non_contactable
    seq: int | None = Field(default=None, ge=0)
    line: int | None = Field(default=None, ge=1)
    nhs_number: str | None = None
    mobile: str | None = None
    email: str | None = None
    name: str | None = None
    date_of_birth: str | None = None
    reason: NonContactableReason | None = None
    # saved
    message_id: MessageId | None = None
    # plan
    ods_code: str | None = Field(default=None, min_length=1, max_length=16)
    organisation_type: OrganisationType = "gp"
    message_type: MessageType | None = None
    body: str | None = Field(default=None, min_length=1, max_length=5000)
    patient_list: int | None = Field(default=None, ge=0)
    contactable: int | None = Field(default=None, ge=0)
    non_contactable: int | None = Field(default=None, ge=0)
    without_valid_mobile: int | None = Field(default=None, ge=0)
    send_at: Timestamp | None = None
    stagger_count: int | None = Field(default=None, ge=1)
    stagger_every_seconds: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _fields_of_kind(self) -> BatchEvent:
        missing = [n for n in _BATCH_FIELDS[self.kind] if getattr(self, n) is None]
        if missing:
            raise ValueError(f"{self.kind} record lacks {', '.join(missing)}")
        if (self.stagger_count is None) != (self.stagger_every_seconds is None):
            raise ValueError("a stagger needs both stagger_count and stagger_every_seconds")
        return self


class BatchStatus(Event):
    """A batch as the practice sees it, on the compacted ``batch-status`` (the latest record
    per ``batch_id`` is current). Counters as the batch messaging page defines them."""

    batch_id: BatchId
    status: BatchState
    ods_code: str
    message_type: MessageType
    patient_list: int  # rows in the uploaded list
    contactable: int
    non_contactable: int
    without_valid_mobile: int  # "patients without a valid mobile number"
    released: int  # patients handed to routing so far
    delivered: int = 0  # SMS and NHS App delivery receipts (email has none)
    failed_to_deliver: int = 0
    saved: int = 0  # messages written to the clinical record (from upstream)
    send_at: Timestamp
    stagger_count: int | None = None
    stagger_every_seconds: float | None = None
    next_release_at: Timestamp | None = None
    cancelled_at: Timestamp | None = None
    links_revoked: bool = False  # final: revoked links are never re-activated
    links_revoked_at: Timestamp | None = None
    updated_at: Timestamp


MessageState = Literal["sent", "delivered", "failed", "not_sent"]


class MessageStatus(Event):
    """What the practice's conversation thread shows for one message, on the compacted
    ``message-status`` (the latest record per ``message_id`` is current). An NHS App
    message is "sent - To: NHS App" and never updated, nor for its backup SMS (individual
    messaging pilot page); an SMS goes on to delivered or failed; an email stays sent."""

    message_id: MessageId
    channel: Channel
    status: MessageState
    label: str
    reason: str | None = None  # not_sent: the routing reason; failed: the receipt status
    batch_id: str | None = None
    updated_at: Timestamp
