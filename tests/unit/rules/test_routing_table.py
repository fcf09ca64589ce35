"""Table tests of ``route``: one row per contract rule, per Dispatch reason and per rule order.

The contract ("Routing rules") applies rules 1 to 8 in order, the first match deciding, and
then checks the number of any ``sms`` decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest

from appfirst.rules.contact import sms_fragments
from appfirst.rules.nhs_number import check_digit
from appfirst.rules.routing import Deadlines, route
from appfirst.topics.models import (
    Dispatch,
    Eligibility,
    PracticeSettings,
    Reason,
    SendRequest,
)

NOW = datetime(2025, 3, 4, 9, 30, 0, tzinfo=UTC)
MOBILE = "07911 123456"
MOBILE_E164 = "+447911123456"
EMAIL = "patient@example.nhs.uk"


def _nhs_number(first_nine: str = "943476591") -> str:
    digit = check_digit(first_nine)
    assert digit is not None
    return f"{first_nine}{digit}"


NHS_NUMBER = _nhs_number()

# The contract's "reason by channel" list.
REASONS_BY_CHANNEL: dict[str, set[str]] = {
    "email": {"email_selected", "email_in_list"},
    "nhs_app": {"nhs_app_enabled"},
    "sms": {
        "sms_only_type",
        "number_overridden",
        "integration_off",
        "not_gp",
        "not_england",
        "no_nhs_app",
        "notifications_off",
        "proxy_only",
        "eligibility_unknown",
    },
    "none": {"deceased", "contact_details_missing", "not_uk_mobile", "likely_to_fail"},
}

# Rule labels used to tag rows, so that the table provably covers every contract rule.
RULES = {
    "1-deceased",
    "2-email",
    "3-sms-only",
    "4-number-overridden",
    "5-not-gp-or-england",
    "6-integration-off",
    "7-eligibility",
    "8-nhs-app",
    "number-check",
}


def make_request(
    *,
    message_id: str = "msg-1",
    origin: str = "individual",
    message_type: str = "appointment_reminder",
    organisation_type: str = "gp",
    nation: str = "england",
    mobile: str | None = MOBILE,
    email: str | None = None,
    deceased: bool = False,
    email_selected: bool = False,
    number_overridden: bool = False,
    body: str = "Your appointment is on Tuesday at 10:00.",
) -> SendRequest:
    return SendRequest.model_validate(
        {
            "message_id": message_id,
            "requested_at": NOW - timedelta(minutes=1),
            "ods_code": "A81001",
            "organisation_type": organisation_type,
            "nation": nation,
            "origin": origin,
            "batch_id": "batch-7" if origin == "batch" else None,
            "message_type": message_type,
            "body": body,
            "patient": {
                "nhs_number": NHS_NUMBER,
                "mobile": mobile,
                "email": email,
                "deceased": deceased,
            },
            "email_selected": email_selected,
            "number_overridden": number_overridden,
        }
    )


def make_practice(
    *,
    nhs_app_individual: bool = True,
    arm: str | None = "treatment",
    likely_to_fail_check: bool = False,
) -> PracticeSettings:
    return PracticeSettings.model_validate(
        {
            "ods_code": "A81001",
            "nhs_app_individual": nhs_app_individual,
            "arm": arm,
            "likely_to_fail_check": likely_to_fail_check,
        }
    )


def make_eligibility(
    *, has_nhs_app: bool = True, notifications_enabled: bool = True, proxy_only: bool = False
) -> Eligibility:
    return Eligibility(
        nhs_number=NHS_NUMBER,
        has_nhs_app=has_nhs_app,
        notifications_enabled=notifications_enabled,
        proxy_only=proxy_only,
        checked_at=NOW - timedelta(days=1),
    )


DEFAULT_PRACTICE = object()  # sentinel: use make_practice()
DEFAULT_ELIGIBILITY = object()  # sentinel: use make_eligibility()


def _always_failed(_mobile: str) -> bool:
    return True


def _never_failed(_mobile: str) -> bool:
    return False


@dataclass(frozen=True)
class Row:
    id: str
    rules: tuple[str, ...]
    channel: str
    reason: str
    request: dict[str, Any] = field(default_factory=dict)
    practice: Any = DEFAULT_PRACTICE  # a dict of overrides, None, or DEFAULT_PRACTICE
    eligibility: Any = DEFAULT_ELIGIBILITY  # a dict of overrides, None, or DEFAULT_ELIGIBILITY
    failed_recently: Callable[[str], bool] = _never_failed

    def build(self) -> tuple[SendRequest, PracticeSettings | None, Eligibility | None]:
        req = make_request(**self.request)
        if self.practice is DEFAULT_PRACTICE:
            practice: PracticeSettings | None = make_practice()
        elif self.practice is None:
            practice = None
        else:
            practice = make_practice(**self.practice)
        if self.eligibility is DEFAULT_ELIGIBILITY:
            eligibility: Eligibility | None = make_eligibility()
        elif self.eligibility is None:
            eligibility = None
        else:
            eligibility = make_eligibility(**self.eligibility)
        return req, practice, eligibility


ROWS: list[Row] = [
    # --- rule 1: deceased -------------------------------------------------------------
    Row("deceased", ("1-deceased",), "none", "deceased", {"deceased": True}),
    Row(
        "order/deceased-beats-email-in-list",
        ("1-deceased", "2-email"),
        "none",
        "deceased",
        {"deceased": True, "origin": "batch", "email": EMAIL},
    ),
    Row(
        "order/deceased-beats-email-selected",
        ("1-deceased", "2-email"),
        "none",
        "deceased",
        {"deceased": True, "email": EMAIL, "email_selected": True},
    ),
    Row(
        "order/deceased-beats-sms-only-type",
        ("1-deceased", "3-sms-only"),
        "none",
        "deceased",
        {"deceased": True, "message_type": "two_factor"},
    ),
    Row(
        "order/deceased-beats-contact-details-missing",
        ("1-deceased",),
        "none",
        "deceased",
        {"deceased": True, "mobile": None},
        eligibility=None,
    ),
    # --- rule 2: email ----------------------------------------------------------------
    Row(
        "email-in-list",
        ("2-email",),
        "email",
        "email_in_list",
        {"origin": "batch", "email": EMAIL},
    ),
    Row(
        "email-in-list/flag-not-needed-for-batch",
        ("2-email",),
        "email",
        "email_in_list",
        {"origin": "batch", "email": EMAIL, "email_selected": False, "mobile": None},
    ),
    Row(
        "email-selected",
        ("2-email",),
        "email",
        "email_selected",
        {"email": EMAIL, "email_selected": True},
    ),
    Row(
        "email-selected/no-mobile-needed",
        ("2-email",),
        "email",
        "email_selected",
        {"email": EMAIL, "email_selected": True, "mobile": None},
    ),
    Row(
        "individual-email-not-selected-goes-on",
        ("2-email", "8-nhs-app"),
        "nhs_app",
        "nhs_app_enabled",
        {"email": EMAIL, "email_selected": False},
    ),
    Row(
        "email-selected-without-address-goes-on",
        ("2-email", "8-nhs-app"),
        "nhs_app",
        "nhs_app_enabled",
        {"email": None, "email_selected": True},
    ),
    Row(
        "order/self-book-batch-with-email-skips-email",
        ("2-email", "8-nhs-app"),
        "nhs_app",
        "nhs_app_enabled",
        {"origin": "batch", "message_type": "self_book", "email": EMAIL},
    ),
    Row(
        "order/self-book-individual-email-selected-skips-email",
        ("2-email", "8-nhs-app"),
        "nhs_app",
        "nhs_app_enabled",
        {"message_type": "self_book", "email": EMAIL, "email_selected": True},
    ),
    Row(
        "order/self-book-with-email-falls-to-sms",
        ("2-email", "7-eligibility"),
        "sms",
        "eligibility_unknown",
        {"origin": "batch", "message_type": "self_book", "email": EMAIL},
        eligibility=None,
    ),
    Row(
        "order/email-beats-sms-only-type",
        ("2-email", "3-sms-only"),
        "email",
        "email_in_list",
        {"origin": "batch", "message_type": "confirmation", "email": EMAIL},
    ),
    Row(
        "order/email-beats-not-gp",
        ("2-email", "5-not-gp-or-england"),
        "email",
        "email_selected",
        {"organisation_type": "other", "email": EMAIL, "email_selected": True},
    ),
    # --- rule 3: SMS-only types -------------------------------------------------------
    Row(
        "sms-only-type/questionnaire_reminder",
        ("3-sms-only",),
        "sms",
        "sms_only_type",
        {"message_type": "questionnaire_reminder"},
    ),
    Row(
        "sms-only-type/confirmation",
        ("3-sms-only",),
        "sms",
        "sms_only_type",
        {"message_type": "confirmation"},
    ),
    Row(
        "sms-only-type/two_factor-batch",
        ("3-sms-only",),
        "sms",
        "sms_only_type",
        {"message_type": "two_factor", "origin": "batch"},
    ),
    Row(
        "order/sms-only-type-beats-number-overridden",
        ("3-sms-only", "4-number-overridden"),
        "sms",
        "sms_only_type",
        {"message_type": "two_factor", "number_overridden": True},
    ),
    Row(
        "order/sms-only-type-beats-not-gp",
        ("3-sms-only", "5-not-gp-or-england"),
        "sms",
        "sms_only_type",
        {"message_type": "confirmation", "organisation_type": "other", "nation": "wales"},
    ),
    # --- rule 4: number overridden ----------------------------------------------------
    Row(
        "number-overridden",
        ("4-number-overridden",),
        "sms",
        "number_overridden",
        {"number_overridden": True},
    ),
    Row(
        "order/number-overridden-beats-not-gp",
        ("4-number-overridden", "5-not-gp-or-england"),
        "sms",
        "number_overridden",
        {"number_overridden": True, "organisation_type": "other"},
    ),
    # --- rule 5: not a GP / not England -----------------------------------------------
    Row("not-gp", ("5-not-gp-or-england",), "sms", "not_gp", {"organisation_type": "other"}),
    Row(
        "order/not-gp-beats-not-england",
        ("5-not-gp-or-england",),
        "sms",
        "not_gp",
        {"organisation_type": "other", "nation": "scotland"},
    ),
    Row("not-england/wales", ("5-not-gp-or-england",), "sms", "not_england", {"nation": "wales"}),
    Row(
        "not-england/scotland",
        ("5-not-gp-or-england",),
        "sms",
        "not_england",
        {"nation": "scotland", "origin": "batch"},
    ),
    Row(
        "not-england/northern_ireland",
        ("5-not-gp-or-england",),
        "sms",
        "not_england",
        {"nation": "northern_ireland"},
    ),
    Row(
        "order/not-england-beats-integration-off",
        ("5-not-gp-or-england", "6-integration-off"),
        "sms",
        "not_england",
        {"nation": "wales"},
        practice={"nhs_app_individual": False},
    ),
    # --- rule 6: practice integration off (individual only) ---------------------------
    Row(
        "integration-off",
        ("6-integration-off",),
        "sms",
        "integration_off",
        practice={"nhs_app_individual": False},
    ),
    Row(
        "integration-off/no-practice-record-has-defaults",
        ("6-integration-off",),
        "sms",
        "integration_off",
        practice=None,
    ),
    Row(
        "order/integration-off-beats-eligibility-unknown",
        ("6-integration-off", "7-eligibility"),
        "sms",
        "integration_off",
        practice={"nhs_app_individual": False},
        eligibility=None,
    ),
    Row(
        "order/batch-ignores-nhs-app-individual-switch",
        ("6-integration-off", "8-nhs-app"),
        "nhs_app",
        "nhs_app_enabled",
        {"origin": "batch"},
        practice={"nhs_app_individual": False},
    ),
    Row(
        "order/batch-without-practice-record-goes-nhs-app",
        ("6-integration-off", "8-nhs-app"),
        "nhs_app",
        "nhs_app_enabled",
        {"origin": "batch", "message_type": "bp_monitoring_questionnaire"},
        practice=None,
    ),
    # --- rule 7: eligibility ----------------------------------------------------------
    Row("eligibility-unknown", ("7-eligibility",), "sms", "eligibility_unknown", eligibility=None),
    Row(
        "no-nhs-app",
        ("7-eligibility",),
        "sms",
        "no_nhs_app",
        eligibility={"has_nhs_app": False},
    ),
    Row(
        "order/no-nhs-app-beats-notifications-off",
        ("7-eligibility",),
        "sms",
        "no_nhs_app",
        eligibility={"has_nhs_app": False, "notifications_enabled": False, "proxy_only": True},
    ),
    Row(
        "notifications-off",
        ("7-eligibility",),
        "sms",
        "notifications_off",
        eligibility={"notifications_enabled": False},
    ),
    Row(
        "order/notifications-off-beats-proxy-only",
        ("7-eligibility",),
        "sms",
        "notifications_off",
        eligibility={"notifications_enabled": False, "proxy_only": True},
    ),
    Row(
        "proxy-only",
        ("7-eligibility",),
        "sms",
        "proxy_only",
        eligibility={"proxy_only": True},
    ),
    Row(
        "batch-eligibility-unknown",
        ("7-eligibility",),
        "sms",
        "eligibility_unknown",
        {"origin": "batch"},
        practice={"nhs_app_individual": False},
        eligibility=None,
    ),
    # --- rule 8: NHS App --------------------------------------------------------------
    Row("nhs-app-enabled", ("8-nhs-app",), "nhs_app", "nhs_app_enabled"),
    Row(
        "nhs-app-enabled/batch",
        ("8-nhs-app",),
        "nhs_app",
        "nhs_app_enabled",
        {"origin": "batch", "message_type": "questionnaire"},
    ),
    Row(
        "order/nhs-app-with-missing-mobile-still-nhs-app",
        ("8-nhs-app", "number-check"),
        "nhs_app",
        "nhs_app_enabled",
        {"mobile": None},
    ),
    Row(
        "order/nhs-app-with-foreign-mobile-still-nhs-app",
        ("8-nhs-app", "number-check"),
        "nhs_app",
        "nhs_app_enabled",
        {"mobile": "+33 6 12 34 56 78"},
    ),
    Row(
        "order/nhs-app-ignores-likely-to-fail",
        ("8-nhs-app", "number-check"),
        "nhs_app",
        "nhs_app_enabled",
        practice={"likely_to_fail_check": True},
        failed_recently=_always_failed,
    ),
    # --- number check of sms decisions ------------------------------------------------
    Row(
        "contact-details-missing/none",
        ("number-check",),
        "none",
        "contact_details_missing",
        {"mobile": None},
        eligibility=None,
    ),
    Row(
        "contact-details-missing/empty",
        ("number-check",),
        "none",
        "contact_details_missing",
        {"mobile": "", "message_type": "two_factor"},
    ),
    Row(
        "contact-details-missing/blank",
        ("number-check",),
        "none",
        "contact_details_missing",
        {"mobile": "   ", "number_overridden": True},
    ),
    Row(
        "order/contact-details-missing-beats-likely-to-fail",
        ("number-check",),
        "none",
        "contact_details_missing",
        {"mobile": None, "message_type": "confirmation"},
        practice={"likely_to_fail_check": True},
        failed_recently=_always_failed,
    ),
    Row(
        "not-uk-mobile/landline",
        ("number-check",),
        "none",
        "not_uk_mobile",
        {"mobile": "020 7946 0000", "organisation_type": "other"},
    ),
    Row(
        "not-uk-mobile/foreign-mobile",
        ("number-check",),
        "none",
        "not_uk_mobile",
        {"mobile": "+33 6 12 34 56 78", "nation": "wales"},
    ),
    Row(
        "not-uk-mobile/garbage",
        ("number-check",),
        "none",
        "not_uk_mobile",
        {"mobile": "call reception"},
        eligibility={"has_nhs_app": False},
    ),
    Row(
        "order/not-uk-mobile-beats-likely-to-fail",
        ("number-check",),
        "none",
        "not_uk_mobile",
        {"mobile": "020 7946 0000"},
        practice={"likely_to_fail_check": True},
        eligibility=None,
        failed_recently=_always_failed,
    ),
    Row(
        "likely-to-fail",
        ("number-check",),
        "none",
        "likely_to_fail",
        practice={"likely_to_fail_check": True},
        eligibility=None,
        failed_recently=_always_failed,
    ),
    Row(
        "likely-to-fail-check-off-sends-sms",
        ("number-check", "7-eligibility"),
        "sms",
        "eligibility_unknown",
        practice={"likely_to_fail_check": False},
        eligibility=None,
        failed_recently=_always_failed,
    ),
    Row(
        "likely-to-fail-check-on-but-no-recent-failure",
        ("number-check", "3-sms-only"),
        "sms",
        "sms_only_type",
        {"message_type": "two_factor"},
        practice={"likely_to_fail_check": True},
        failed_recently=_never_failed,
    ),
    Row(
        "order/email-is-not-number-checked",
        ("2-email", "number-check"),
        "email",
        "email_in_list",
        {"origin": "batch", "email": EMAIL, "mobile": "020 7946 0000"},
        practice={"likely_to_fail_check": True},
        failed_recently=_always_failed,
    ),
]


def _route(row: Row) -> Dispatch:
    req, practice, eligibility = row.build()
    return route(
        req,
        practice,
        eligibility,
        now=NOW,
        deadlines=Deadlines(),
        failed_recently=row.failed_recently,
    )


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_route_table(row: Row) -> None:
    dispatch = _route(row)
    assert (dispatch.channel, dispatch.reason) == (row.channel, row.reason)


def test_row_ids_are_unique() -> None:
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids))


def test_table_covers_every_reason() -> None:
    covered = {row.reason for row in ROWS}
    assert covered == set(get_args(Reason))


def test_table_covers_every_contract_rule() -> None:
    covered = {rule for row in ROWS for rule in row.rules}
    assert covered == RULES


def test_table_expectations_agree_with_contract_reason_by_channel() -> None:
    assert set().union(*REASONS_BY_CHANNEL.values()) == set(get_args(Reason))
    for row in ROWS:
        assert row.reason in REASONS_BY_CHANNEL[row.channel], row.id


# --- Dispatch fields --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "message_type", "seconds"),
    [
        ("individual", "appointment_reminder", 3600),
        ("individual", "bp_monitoring_questionnaire", 3600),
        ("batch", "bp_monitoring_questionnaire", 10800),
        ("batch", "questionnaire", 86400),
        ("batch", "self_book", 86400),
        ("batch", "sms_with_response", 86400),
    ],
    ids=[
        "individual",
        "individual-bp-monitoring",
        "batch-bp-monitoring",
        "batch-questionnaire",
        "batch-self-book",
        "batch-sms-with-response",
    ],
)
def test_fallback_due_at_for_nhs_app_uses_default_deadlines(
    origin: str, message_type: str, seconds: int
) -> None:
    req = make_request(origin=origin, message_type=message_type)
    dispatch = route(req, make_practice(), make_eligibility(), now=NOW, deadlines=Deadlines())
    assert dispatch.channel == "nhs_app"
    assert dispatch.dispatched_at == NOW
    assert dispatch.fallback_due_at == NOW + timedelta(seconds=seconds)
    assert dispatch.sms_fragments is None


def test_deadlines_defaults_match_contract() -> None:
    deadlines = Deadlines()
    assert (deadlines.individual, deadlines.bp_monitoring, deadlines.batch) == (
        3600,
        10800,
        86400,
    )


def test_fallback_due_at_uses_given_deadlines() -> None:
    deadlines = Deadlines(individual=60, bp_monitoring=120, batch=180)
    for origin, message_type, seconds in [
        ("individual", "questionnaire", 60),
        ("batch", "bp_monitoring_questionnaire", 120),
        ("batch", "video_invite", 180),
    ]:
        req = make_request(origin=origin, message_type=message_type)
        dispatch = route(req, make_practice(), make_eligibility(), now=NOW, deadlines=deadlines)
        assert dispatch.fallback_due_at == NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "row",
    [r for r in ROWS if r.channel != "nhs_app"],
    ids=[r.id for r in ROWS if r.channel != "nhs_app"],
)
def test_fallback_due_at_only_for_nhs_app(row: Row) -> None:
    assert _route(row).fallback_due_at is None


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_sms_fragments_only_for_sms(row: Row) -> None:
    dispatch = _route(row)
    if dispatch.channel == "sms":
        assert dispatch.sms_fragments == sms_fragments(make_request(**row.request).body)
    else:
        assert dispatch.sms_fragments is None


@pytest.mark.parametrize(
    ("body", "fragments"),
    [("x" * 160, 1), ("x" * 161, 2), ("ł" * 71, 2), ("€" * 80, 1), ("€" * 81, 2)],
    ids=["gsm-160", "gsm-161", "ucs2-71", "ext-80", "ext-81"],
)
def test_sms_fragments_are_counted_from_body(body: str, fragments: int) -> None:
    req = make_request(message_type="two_factor", body=body)
    dispatch = route(req, make_practice(), make_eligibility(), now=NOW, deadlines=Deadlines())
    assert (dispatch.channel, dispatch.sms_fragments) == ("sms", fragments)


@pytest.mark.parametrize(
    "arm", ["treatment", "control", None], ids=["treatment", "control", "none"]
)
@pytest.mark.parametrize(
    "request_overrides",
    [{}, {"message_type": "two_factor"}, {"origin": "batch", "email": EMAIL}, {"deceased": True}],
    ids=["nhs_app", "sms", "email", "none"],
)
def test_arm_is_copied_from_practice(arm: str | None, request_overrides: dict[str, Any]) -> None:
    dispatch = route(
        make_request(**request_overrides),
        make_practice(arm=arm),
        make_eligibility(),
        now=NOW,
        deadlines=Deadlines(),
    )
    assert dispatch.arm == arm


def test_arm_is_null_without_practice_record() -> None:
    dispatch = route(
        make_request(origin="batch"), None, make_eligibility(), now=NOW, deadlines=Deadlines()
    )
    assert dispatch.channel == "nhs_app"
    assert dispatch.arm is None


@pytest.mark.parametrize(
    "raw",
    ["07911 123456", "+44 7911 123456", "447911123456", "+44 (0)7911-123-456"],
    ids=["national", "international-spaced", "no-plus", "punctuated"],
)
@pytest.mark.parametrize(
    "request_overrides",
    [{}, {"message_type": "confirmation"}],
    ids=["nhs_app", "sms"],
)
def test_mobile_is_normalised_to_e164(raw: str, request_overrides: dict[str, Any]) -> None:
    dispatch = route(
        make_request(mobile=raw, **request_overrides),
        make_practice(),
        make_eligibility(),
        now=NOW,
        deadlines=Deadlines(),
    )
    assert dispatch.channel in ("nhs_app", "sms")
    assert dispatch.mobile == MOBILE_E164


def test_failed_recently_is_asked_about_the_normalised_number() -> None:
    asked: list[str] = []

    def failed_recently(mobile: str) -> bool:
        asked.append(mobile)
        return True

    dispatch = route(
        make_request(mobile="+44 7911 123456", message_type="two_factor"),
        make_practice(likely_to_fail_check=True),
        make_eligibility(),
        now=NOW,
        deadlines=Deadlines(),
        failed_recently=failed_recently,
    )
    assert (dispatch.channel, dispatch.reason) == ("none", "likely_to_fail")
    assert asked == [MOBILE_E164]


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_dispatch_copies_request_fields(row: Row) -> None:
    req, practice, _ = row.build()
    dispatch = _route(row)
    assert dispatch.message_id == req.message_id
    assert dispatch.ods_code == req.ods_code
    assert dispatch.origin == req.origin
    assert dispatch.message_type == req.message_type
    assert dispatch.dispatched_at == NOW
    assert dispatch.arm == (practice.arm if practice is not None else None)
    if dispatch.channel == "email":
        assert dispatch.email == req.patient.email
    if dispatch.channel == "none":
        assert dispatch.body is None
    else:
        assert dispatch.body == req.body
