"""Bodies too long for an SMS leg, and number fingerprints."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from appfirst.rules.contact import SMS_MAX_CHARACTERS, number_fingerprint
from appfirst.rules.routing import BodyTooLongForSms, Deadlines, check_sms_length, route
from appfirst.topics.models import Eligibility, PracticeSettings, SendRequest

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def _req(body: str, **fields: object) -> SendRequest:
    patient = {
        "nhs_number": "9434765919",
        "mobile": "07911 123456",
        "email": None,
        **fields.pop("patient", {}),
    }  # type: ignore[dict-item]
    return SendRequest.model_validate(
        {
            "message_id": "m1",
            "requested_at": NOW,
            "ods_code": "A1",
            "origin": "individual",
            "message_type": "sms",
            "body": body,
            "patient": patient,
            **fields,
        }
    )


def test_the_longest_sms_body_passes() -> None:
    check_sms_length(_req("a" * SMS_MAX_CHARACTERS))


def test_one_character_more_is_refused_with_its_length() -> None:
    with pytest.raises(BodyTooLongForSms, match=r"919 > 918"):
        check_sms_length(_req("a" * (SMS_MAX_CHARACTERS + 1)))


def test_extension_characters_count_twice() -> None:
    with pytest.raises(BodyTooLongForSms):
        check_sms_length(_req("€" * 460))


@pytest.mark.parametrize(
    "fields",
    [
        {"patient": {"deceased": True}},
        {"email_selected": True, "patient": {"email": "a@b.org"}},
        {"origin": "batch", "message_type": "questionnaire", "patient": {"email": "a@b.org"}},
    ],
    ids=["deceased", "email_selected", "email_in_list"],
)
def test_requests_that_never_need_an_sms_may_be_long(fields: dict[str, object]) -> None:
    check_sms_length(_req("a" * 2000, **fields))


def test_an_nhs_app_message_is_refused_when_its_fallback_could_not_be_sent() -> None:
    practice = PracticeSettings(ods_code="A1", nhs_app_individual=True)
    elig = Eligibility(
        nhs_number="9434765919", has_nhs_app=True, notifications_enabled=True, checked_at=NOW
    )
    with pytest.raises(BodyTooLongForSms):
        route(_req("a" * 1000), practice, elig, now=NOW, deadlines=Deadlines())


def test_fingerprints_are_stable_keyed_and_do_not_hold_the_number() -> None:
    a = number_fingerprint("+447911123456", b"k1")
    assert a == number_fingerprint("+447911123456", b"k1")
    assert a != number_fingerprint("+447911123456", b"k2")
    assert a != number_fingerprint("+447911123457", b"k1")
    assert "7911123456" not in a and len(a) == 32
