"""Property tests of ``route`` over generated valid requests, settings and eligibility."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import get_args

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appfirst.rules.contact import normalise_uk_mobile
from appfirst.rules.nhs_number import check_digit
from appfirst.rules.routing import Deadlines, route
from appfirst.topics.models import (
    SMS_ONLY_TYPES,
    Dispatch,
    Eligibility,
    MessageType,
    Nation,
    PracticeSettings,
    Reason,
    SendRequest,
)

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,  # no .hypothesis directory: these tests do no I/O
    suppress_health_check=[HealthCheck.too_slow],
)

REASONS_BY_CHANNEL: dict[str, frozenset[str]] = {
    "email": frozenset({"email_selected", "email_in_list"}),
    "nhs_app": frozenset({"nhs_app_enabled"}),
    "sms": frozenset(
        {
            "sms_only_type",
            "number_overridden",
            "integration_off",
            "not_gp",
            "not_england",
            "no_nhs_app",
            "notifications_off",
            "proxy_only",
            "eligibility_unknown",
        }
    ),
    "none": frozenset({"deceased", "contact_details_missing", "not_uk_mobile", "likely_to_fail"}),
}

TIMES = st.datetimes(
    min_value=datetime(2020, 1, 1),
    max_value=datetime(2035, 1, 1),
    timezones=st.just(UTC),
)


@st.composite
def nhs_numbers(draw: st.DrawFn) -> str:
    first_nine = draw(st.text("0123456789", min_size=9, max_size=9))
    digit = check_digit(first_nine)
    if digit is None:
        # No valid NHS number starts with these nine digits: nudge the last one.
        first_nine = first_nine[:8] + str((int(first_nine[8]) + 1) % 10)
        digit = check_digit(first_nine)
    assert digit is not None
    return first_nine + str(digit)


MOBILES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "",
            "  ",
            "07911 123456",
            "+44 7911 123456",
            "447700123456",
            "07624 123456",
            "020 7946 0000",
            "+33 6 12 34 56 78",
            "+1 202 555 0147",
            "not a number",
            "0800 123 4567",
        ]
    ),
    st.text(max_size=20),
)
EMAILS = st.one_of(st.none(), st.just(""), st.just("patient@example.nhs.uk"), st.emails())


@st.composite
def send_requests(draw: st.DrawFn) -> SendRequest:
    origin = draw(st.sampled_from(["individual", "batch"]))
    return SendRequest.model_validate(
        {
            "message_id": draw(st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)),
            "requested_at": draw(TIMES),
            "ods_code": draw(st.from_regex(r"[A-Z][0-9]{5}", fullmatch=True)),
            "organisation_type": draw(st.sampled_from(["gp", "other"])),
            "nation": draw(st.sampled_from(get_args(Nation))),
            "origin": origin,
            "batch_id": draw(st.text(min_size=1, max_size=8)) if origin == "batch" else None,
            "message_type": draw(st.sampled_from(get_args(MessageType))),
            "body": draw(st.text(min_size=1, max_size=400)),
            "patient": {
                "nhs_number": draw(nhs_numbers()),
                "mobile": draw(MOBILES),
                "email": draw(EMAILS),
                "deceased": draw(st.booleans()),
            },
            "email_selected": draw(st.booleans()),
            "number_overridden": draw(st.booleans()),
        }
    )


PRACTICES = st.one_of(
    st.none(),
    st.builds(
        PracticeSettings,
        ods_code=st.from_regex(r"[A-Z][0-9]{5}", fullmatch=True),
        nhs_app_individual=st.booleans(),
        arm=st.sampled_from(["treatment", "control", None]),
        likely_to_fail_check=st.booleans(),
    ),
)


@st.composite
def eligibilities(draw: st.DrawFn) -> Eligibility | None:
    if draw(st.booleans()):
        return None
    return Eligibility(
        nhs_number=draw(nhs_numbers()),
        has_nhs_app=draw(st.booleans()),
        notifications_enabled=draw(st.booleans()),
        proxy_only=draw(st.booleans()),
        checked_at=draw(TIMES),
    )


FAILED_RECENTLY = st.functions(like=lambda mobile: False, returns=st.booleans(), pure=True)


def _route(
    req: SendRequest,
    practice: PracticeSettings | None,
    eligibility: Eligibility | None,
    now: datetime,
    failed_recently: Callable[[str], bool],
) -> Dispatch:
    return route(
        req,
        practice,
        eligibility,
        now=now,
        deadlines=Deadlines(),
        failed_recently=failed_recently,
    )


def _oracle(
    req: SendRequest,
    practice: PracticeSettings | None,
    eligibility: Eligibility | None,
    failed_recently: Callable[[str], bool],
) -> tuple[str, str]:
    """The contract's routing rules, written out independently of the code under test."""
    p = req.patient
    nhs_app_individual = practice.nhs_app_individual if practice else False
    likely_check = practice.likely_to_fail_check if practice else False
    decision: tuple[str, str]
    if p.deceased:
        return "none", "deceased"
    if req.message_type != "self_book" and p.email and req.origin == "batch":
        return "email", "email_in_list"
    if req.message_type != "self_book" and p.email and req.email_selected:
        return "email", "email_selected"
    if req.message_type in {"questionnaire_reminder", "confirmation", "two_factor"}:
        decision = ("sms", "sms_only_type")
    elif req.number_overridden:
        decision = ("sms", "number_overridden")
    elif req.organisation_type == "other":
        decision = ("sms", "not_gp")
    elif req.nation != "england":
        decision = ("sms", "not_england")
    elif req.origin == "individual" and not nhs_app_individual:
        decision = ("sms", "integration_off")
    elif eligibility is None:
        decision = ("sms", "eligibility_unknown")
    elif not eligibility.has_nhs_app:
        decision = ("sms", "no_nhs_app")
    elif not eligibility.notifications_enabled:
        decision = ("sms", "notifications_off")
    elif eligibility.proxy_only:
        decision = ("sms", "proxy_only")
    else:
        return "nhs_app", "nhs_app_enabled"
    mobile = normalise_uk_mobile(p.mobile)
    if p.mobile is None or not p.mobile.strip():
        return "none", "contact_details_missing"
    if mobile is None:
        return "none", "not_uk_mobile"
    if likely_check and failed_recently(mobile):
        return "none", "likely_to_fail"
    return decision


COMMON = given(
    req=send_requests(),
    practice=PRACTICES,
    eligibility=eligibilities(),
    now=TIMES,
    failed_recently=FAILED_RECENTLY,
)


@PROPERTY_SETTINGS
@COMMON
def test_one_dispatch_with_a_contract_channel_and_reason(
    req: SendRequest,
    practice: PracticeSettings | None,
    eligibility: Eligibility | None,
    now: datetime,
    failed_recently: Callable[[str], bool],
) -> None:
    dispatch = _route(req, practice, eligibility, now, failed_recently)
    assert isinstance(dispatch, Dispatch)
    assert dispatch.reason in get_args(Reason)
    assert dispatch.reason in REASONS_BY_CHANNEL[dispatch.channel]
    assert dispatch.message_id == req.message_id
    # The decision matches the contract's rules written out independently.
    assert (dispatch.channel, dispatch.reason) == _oracle(
        req, practice, eligibility, failed_recently
    )


@PROPERTY_SETTINGS
@COMMON
def test_channel_invariants(
    req: SendRequest,
    practice: PracticeSettings | None,
    eligibility: Eligibility | None,
    now: datetime,
    failed_recently: Callable[[str], bool],
) -> None:
    dispatch = _route(req, practice, eligibility, now, failed_recently)
    if req.message_type in SMS_ONLY_TYPES:
        assert dispatch.channel != "nhs_app"
    if req.message_type == "self_book":
        assert dispatch.channel != "email"
    if req.patient.deceased:
        assert (dispatch.channel, dispatch.reason) == ("none", "deceased")
    if not req.patient.email:
        assert dispatch.channel != "email"
    if dispatch.channel == "nhs_app":
        assert not req.patient.deceased
        assert req.organisation_type == "gp"
        assert req.nation == "england"
        assert not req.number_overridden
        assert eligibility is not None
        assert eligibility.has_nhs_app and eligibility.notifications_enabled
        assert not eligibility.proxy_only
        if req.origin == "individual":
            assert practice is not None and practice.nhs_app_individual


@PROPERTY_SETTINGS
@COMMON
def test_dispatch_fields_follow_the_channel(
    req: SendRequest,
    practice: PracticeSettings | None,
    eligibility: Eligibility | None,
    now: datetime,
    failed_recently: Callable[[str], bool],
) -> None:
    dispatch = _route(req, practice, eligibility, now, failed_recently)
    assert dispatch.arm == (practice.arm if practice else None)
    assert dispatch.dispatched_at == now.replace(microsecond=now.microsecond // 1000 * 1000)
    if dispatch.channel == "nhs_app":
        seconds = Deadlines().for_message(req.origin, req.message_type)
        assert dispatch.fallback_due_at is not None
        assert dispatch.fallback_due_at - dispatch.dispatched_at == timedelta(seconds=seconds)
    else:
        assert dispatch.fallback_due_at is None
    if dispatch.channel == "sms":
        assert dispatch.sms_fragments is not None and dispatch.sms_fragments >= 1
        assert dispatch.mobile is not None
        assert dispatch.mobile.startswith("+44")
        assert dispatch.mobile[1:].isdigit()
    else:
        assert dispatch.sms_fragments is None
    if dispatch.channel == "email":
        assert dispatch.email == req.patient.email
