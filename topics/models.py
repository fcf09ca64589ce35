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


class Response(Event):
    message_id: MessageId
    responded_at: Timestamp
    attachments: int = Field(default=0, ge=0)


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
