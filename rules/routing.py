"""The routing decision: which channel a send request goes by, and why.

``route`` is pure: the request, the practice's settings, the patient's eligibility record
and the clock in; one ``Dispatch`` out. The order of the rules is the contract's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from appfirst.errors import RoutingError
from appfirst.rules.contact import (
    SMS_MAX_CHARACTERS,
    normalise_uk_mobile,
    sms_fragments,
    sms_length,
)
from appfirst.topics.models import (
    SMS_ONLY_TYPES,
    Channel,
    Dispatch,
    Eligibility,
    PracticeSettings,
    Reason,
    SendRequest,
)


class BodyTooLongForSms(RoutingError):
    """The message would need an SMS (primary or fallback) longer than the provider takes."""

    def __init__(self, length: int) -> None:
        super().__init__(
            f"body too long for SMS ({length} > {SMS_MAX_CHARACTERS} characters): "
            "shorten or split it, or send it by email"
        )
        self.length = length


@dataclass(frozen=True)
class Deadlines:
    """Seconds from delivery (or dispatch) to fallback, by origin and type."""

    individual: float = 3600
    bp_monitoring: float = 10800
    batch: float = 86400

    def for_message(self, origin: str, message_type: str) -> float:
        if origin == "individual":
            return self.individual
        if message_type == "bp_monitoring_questionnaire":
            return self.bp_monitoring
        return self.batch


NO_SETTINGS = PracticeSettings(ods_code="-")
FailedRecently = Callable[[str], bool]


def _never_failed(_mobile: str) -> bool:
    return False


def _before_sms(req: SendRequest) -> tuple[Channel, Reason] | None:
    """Rules 1 and 2, which need nothing but the request itself."""
    patient = req.patient
    if patient.deceased:
        return "none", "deceased"
    if req.message_type != "self_book" and patient.email and patient.email.strip():
        if req.origin == "batch":
            return "email", "email_in_list"
        if req.email_selected:
            return "email", "email_selected"
    return None


def check_sms_length(req: SendRequest) -> None:
    """Raise ``BodyTooLongForSms`` if this request may need an SMS leg (the message itself
    or its fallback) that the SMS provider cannot take. Never truncate: refuse."""
    if _before_sms(req) is not None:
        return
    length = sms_length(req.body)
    if length > SMS_MAX_CHARACTERS:
        raise BodyTooLongForSms(length)


def choose(
    req: SendRequest, practice: PracticeSettings, eligibility: Eligibility | None
) -> tuple[Channel, Reason]:
    """Rules 1 to 8 of the contract: the first that matches decides."""
    early = _before_sms(req)
    if early is not None:
        return early
    if req.message_type in SMS_ONLY_TYPES:
        return "sms", "sms_only_type"
    if req.number_overridden:
        return "sms", "number_overridden"
    if req.organisation_type == "other":
        return "sms", "not_gp"
    if req.nation != "england":
        return "sms", "not_england"
    if req.origin == "individual" and not practice.nhs_app_individual:
        return "sms", "integration_off"
    if eligibility is None:
        return "sms", "eligibility_unknown"
    if not eligibility.has_nhs_app:
        return "sms", "no_nhs_app"
    if not eligibility.notifications_enabled:
        return "sms", "notifications_off"
    if eligibility.proxy_only:
        return "sms", "proxy_only"
    return "nhs_app", "nhs_app_enabled"


def route(
    req: SendRequest,
    practice: PracticeSettings | None,
    eligibility: Eligibility | None,
    *,
    now: datetime,
    deadlines: Deadlines,
    failed_recently: FailedRecently = _never_failed,
) -> Dispatch:
    practice = practice or NO_SETTINGS
    channel, reason = choose(req, practice, eligibility)
    mobile = normalise_uk_mobile(req.patient.mobile)
    if channel == "sms":
        if not req.patient.mobile or not req.patient.mobile.strip():
            channel, reason = "none", "contact_details_missing"
        elif mobile is None:
            channel, reason = "none", "not_uk_mobile"
        elif practice.likely_to_fail_check and failed_recently(mobile):
            channel, reason = "none", "likely_to_fail"
    if channel in ("sms", "nhs_app"):
        # An NHS App message is refused too: its safety net, the fallback SMS, would be missing.
        check_sms_length(req)
    due = None
    if channel == "nhs_app":
        due = now + timedelta(seconds=deadlines.for_message(req.origin, req.message_type))
    return Dispatch(
        message_id=req.message_id,
        channel=channel,
        reason=reason,
        dispatched_at=now,
        ods_code=req.ods_code,
        arm=practice.arm,
        origin=req.origin,
        message_type=req.message_type,
        fallback_due_at=due,
        sms_fragments=sms_fragments(req.body) if channel == "sms" else None,
        batch_id=req.batch_id,
        requested_at=req.requested_at,
        nhs_number=req.patient.nhs_number if channel == "nhs_app" else None,
        # The NHS App leg keeps the mobile for its fallback SMS.
        mobile=mobile if channel in ("sms", "nhs_app") else None,
        email=req.patient.email if channel == "email" else None,
        body=req.body if channel != "none" else None,
    )
