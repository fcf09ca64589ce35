"""Valid events with sensible defaults, for integration tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from appfirst.rules.nhs_number import check_digit
from appfirst.topics.models import Eligibility, PracticeSettings, SendRequest

_counter = itertools.count(100_000_000)


def nhs_number() -> str:
    while True:
        first = f"{next(_counter) * 7 % 900_000_000 + 100_000_000:09d}"
        digit = check_digit(first)
        if digit is not None:
            return first + str(digit)


def now() -> datetime:
    return datetime.now(UTC)


def request(message_id: str, **fields: Any) -> SendRequest:
    patient = {
        "nhs_number": nhs_number(),
        "mobile": "07911 123456",
        "email": None,
        "deceased": False,
        **fields.pop("patient", {}),
    }
    data: dict[str, Any] = {
        "message_id": message_id,
        "requested_at": now(),
        "ods_code": "A00001",
        "origin": "individual",
        "message_type": "sms_with_response",
        "body": "Please reply to your GP practice.",
        "patient": patient,
        **fields,
    }
    return SendRequest.model_validate(data)


def app_user(nhs: str, **fields: Any) -> Eligibility:
    data: dict[str, Any] = {
        "nhs_number": nhs,
        "has_nhs_app": True,
        "notifications_enabled": True,
        "checked_at": now(),
        **fields,
    }
    return Eligibility.model_validate(data)


def practice(ods: str, **fields: Any) -> PracticeSettings:
    data: dict[str, Any] = {
        "ods_code": ods,
        "nhs_app_individual": True,
        "arm": "treatment",
        **fields,
    }
    return PracticeSettings.model_validate(data)
