"""Validation rules of the contract's events (CONTRACT.md, "Events")."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from appfirst.rules.nhs_number import check_digit, is_valid_nhs_number
from appfirst.topics import models

T0 = datetime(2024, 3, 4, 9, 30, 15, 123000, tzinfo=UTC)


def nhs(first_nine: str) -> str:
    """A valid NHS number from nine digits, its check digit computed."""
    digit = check_digit(first_nine)
    assert digit is not None, f"{first_nine} cannot start a valid NHS number"
    return first_nine + str(digit)


def _prefix_without_check_digit() -> str:
    """The first nine digits (from 100000000 up) for which no check digit exists."""
    for n in range(100_000_000, 100_001_000):
        if check_digit(str(n)) is None:
            return str(n)
    raise AssertionError("no nine-digit prefix with remainder 10 found")


VALID_NHS = [nhs("943476591"), nhs("943476587"), nhs("999999999"), nhs("401023213")]


def send_request(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "message_id": "req-1",
        "requested_at": "2024-03-04T09:30:15.123Z",
        "ods_code": "A81001",
        "origin": "individual",
        "message_type": "sms",
        "body": "Your appointment is on Monday.",
        "patient": {"nhs_number": VALID_NHS[0]},
    }
    data.update(overrides)
    return data


def field_errors(exc: pytest.ExceptionInfo[ValidationError]) -> set[tuple[str | int, ...]]:
    return {tuple(e["loc"]) for e in exc.value.errors()}


# --- message_id ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "message_id",
    ["a", "Z", "0", "req-2024.01:xyz_9", "A" * 64, "urn:nhs:msg:0001", "._:-"],
)
def test_message_id_accepted(message_id: str) -> None:
    assert models.ReadReceipt(message_id=message_id, read_at=T0).message_id == message_id


@pytest.mark.parametrize(
    "message_id",
    [
        "",
        "A" * 65,
        "has space",
        "slash/ed",
        "caf\u00e9",  # é is not in [A-Za-z]
        "\u0661\u0662",  # Arabic-Indic digits are not [0-9]
        "abc\n",  # a trailing newline must not slip past "$"
        "\nabc",
        "tab\there",
        "semi;colon",
        "plus+",
    ],
)
def test_message_id_rejected(message_id: str) -> None:
    with pytest.raises(ValidationError) as exc:
        models.ReadReceipt(message_id=message_id, read_at=T0)
    assert field_errors(exc) == {("message_id",)}


@pytest.mark.parametrize(
    "model",
    [
        models.SendRequest,
        models.Dispatch,
        models.DeliveryReceipt,
        models.ReadReceipt,
        models.Response,
        models.Fallback,
    ],
)
def test_every_message_id_field_has_the_rule(model: type[models.Event]) -> None:
    schema = model.model_json_schema()["properties"]["message_id"]
    assert schema["pattern"] == r"^[A-Za-z0-9._:-]+$"
    assert (schema["minLength"], schema["maxLength"]) == (1, 64)


# --- body ------------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["x", "x" * 5000, "\u00e9" * 5000, "\U0001f600" * 5000])
def test_body_length_in_characters_accepted(body: str) -> None:
    assert models.SendRequest.model_validate(send_request(body=body)).body == body


@pytest.mark.parametrize("body", ["", "x" * 5001, "\u00e9" * 5001])
def test_body_length_rejected(body: str) -> None:
    with pytest.raises(ValidationError) as exc:
        models.SendRequest.model_validate(send_request(body=body))
    assert field_errors(exc) == {("body",)}


# --- NHS number ------------------------------------------------------------------------


def test_known_numbers_are_valid_by_the_check_digit() -> None:
    # Computed, not assumed: 943476591 -> 9, 943476587 -> 0, 999999999 -> 9.
    assert check_digit("943476591") == 9
    assert check_digit("943476587") == 0
    assert check_digit("999999999") == 9
    assert VALID_NHS[:3] == ["9434765919", "9434765870", "9999999999"]


@pytest.mark.parametrize("number", VALID_NHS)
def test_valid_nhs_number_accepted(number: str) -> None:
    assert models.Patient(nhs_number=number).nhs_number == number
    eligibility = models.Eligibility(
        nhs_number=number, has_nhs_app=True, notifications_enabled=True, checked_at=T0
    )
    assert eligibility.nhs_number == number


def _wrong_check_digits() -> list[str]:
    return [number[:9] + str(d) for number in VALID_NHS for d in range(10) if str(d) != number[9]]


@pytest.mark.parametrize("number", _wrong_check_digits())
def test_wrong_check_digit_rejected(number: str) -> None:
    with pytest.raises(ValidationError) as exc:
        models.Patient(nhs_number=number)
    assert field_errors(exc) == {("nhs_number",)}
    assert "modulus-11" in str(exc.value)


def test_prefix_with_remainder_ten_is_never_valid() -> None:
    prefix = _prefix_without_check_digit()
    for d in range(10):
        assert not is_valid_nhs_number(prefix + str(d))
        with pytest.raises(ValidationError):
            models.Patient(nhs_number=prefix + str(d))


@pytest.mark.parametrize(
    "number",
    [
        "",
        VALID_NHS[0][:9],  # 9 digits
        VALID_NHS[0] + "0",  # 11 digits
        "943 476 5919",  # spaces, as printed on letters
        "943-476-5919",
        " 9434765919",
        "9434765919\n",
        "\u0669\u0664\u0663\u0664\u0667\u0666\u0665\u0669\u0661\u0669",  # Arabic-Indic 9434765919
        "\uff19\uff14\uff13\uff14\uff17\uff16\uff15\uff19\uff11\uff19",  # full-width 9434765919
        "94347659l9",
    ],
)
def test_malformed_nhs_number_rejected(number: str) -> None:
    with pytest.raises(ValidationError) as exc:
        models.Patient(nhs_number=number)
    assert field_errors(exc) == {("nhs_number",)}
    with pytest.raises(ValidationError):
        models.Eligibility(
            nhs_number=number, has_nhs_app=True, notifications_enabled=True, checked_at=T0
        )


def test_nhs_number_must_be_a_string() -> None:
    with pytest.raises(ValidationError):
        models.Patient(nhs_number=9434765919)  # type: ignore[arg-type]


def test_nested_patient_error_is_located() -> None:
    bad = VALID_NHS[0][:9] + str((int(VALID_NHS[0][9]) + 1) % 10)
    with pytest.raises(ValidationError) as exc:
        models.SendRequest.model_validate(send_request(patient={"nhs_number": bad}))
    assert field_errors(exc) == {("patient", "nhs_number")}


# --- timestamps -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 3, 4, 9, 30, 15),
        "2024-03-04T09:30:15",
        "2024-03-04T09:30:15.123",
    ],
)
def test_naive_timestamp_rejected(value: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        models.ReadReceipt(message_id="m", read_at=value)
    assert field_errors(exc) == {("read_at",)}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            datetime(2024, 3, 4, 10, 30, 15, 123456, tzinfo=timezone(timedelta(hours=1))),
            datetime(2024, 3, 4, 9, 30, 15, 123000, tzinfo=UTC),
        ),
        ("2024-03-04T04:00:15.999999-05:30", datetime(2024, 3, 4, 9, 30, 15, 999000, tzinfo=UTC)),
        ("2024-03-04T09:30:15Z", datetime(2024, 3, 4, 9, 30, 15, tzinfo=UTC)),
        ("2024-03-04T09:30:15.000999+00:00", datetime(2024, 3, 4, 9, 30, 15, tzinfo=UTC)),
        # Across midnight and a date line.
        ("2024-03-05T08:00:00.5+14:00", datetime(2024, 3, 4, 18, 0, 0, 500000, tzinfo=UTC)),
        # Before the epoch: truncation keeps whole milliseconds.
        ("1969-12-31T23:59:59.9995Z", datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
    ],
)
def test_timestamp_normalised_to_utc_millis(value: Any, expected: datetime) -> None:
    read_at = models.ReadReceipt(message_id="m", read_at=value).read_at
    assert read_at == expected
    assert read_at.tzinfo is not None and read_at.utcoffset() == timedelta(0)
    assert read_at.microsecond % 1000 == 0
    assert (read_at.year, read_at.hour) == (expected.year, expected.hour)  # UTC wall clock


def test_optional_timestamps_are_normalised_too() -> None:
    plus_two = timezone(timedelta(hours=2))
    dispatch = models.Dispatch(
        message_id="m",
        channel="nhs_app",
        reason="nhs_app_enabled",
        dispatched_at=datetime(2024, 1, 1, 12, 0, 0, 1999, tzinfo=plus_two),
        ods_code="A81001",
        arm="treatment",
        origin="individual",
        message_type="sms",
        fallback_due_at=datetime(2024, 1, 1, 13, 0, 0, 2999, tzinfo=plus_two),
        requested_at=datetime(2024, 1, 1, 11, 59, 0, 3999, tzinfo=plus_two),
    )
    for value in (dispatch.dispatched_at, dispatch.fallback_due_at, dispatch.requested_at):
        assert value is not None
        assert value.utcoffset() == timedelta(0)
        assert value.microsecond % 1000 == 0
    assert dispatch.dispatched_at == datetime(2024, 1, 1, 10, 0, 0, 1000, tzinfo=UTC)
    assert dispatch.fallback_due_at == datetime(2024, 1, 1, 11, 0, 0, 2000, tzinfo=UTC)
    assert dispatch.requested_at == datetime(2024, 1, 1, 9, 59, 0, 3000, tzinfo=UTC)
    with pytest.raises(ValidationError) as exc:
        models.Dispatch.model_validate(
            {**dispatch.model_dump(), "fallback_due_at": datetime(2024, 1, 1, 13, 0)}
        )
    assert field_errors(exc) == {("fallback_due_at",)}


def test_json_timestamps_are_rfc3339_utc() -> None:
    receipt = models.ReadReceipt(message_id="m", read_at="2024-03-04T10:30:15.123456+01:00")
    text = receipt.model_dump(mode="json")["read_at"]
    assert text.endswith("Z")
    assert datetime.fromisoformat(text) == datetime(2024, 3, 4, 9, 30, 15, 123000, tzinfo=UTC)


# --- unknown fields, immutability, defaults -----------------------------------------------


def test_unknown_fields_are_ignored() -> None:
    data = send_request(
        schema_version=7,
        priority="high",
        patient={"nhs_number": VALID_NHS[0], "preferred_name": "Sam"},
    )
    request = models.SendRequest.model_validate(data)
    dumped = request.model_dump()
    assert "schema_version" not in dumped and "priority" not in dumped
    assert "preferred_name" not in dumped["patient"]
    assert not hasattr(request, "priority")
    assert request.model_extra is None


def test_unknown_fields_are_ignored_in_json() -> None:
    text = (
        '{"message_id": "m", "read_at": "2024-03-04T09:30:15Z", "source": "nhs_app",'
        ' "nested": {"a": [1, 2]}}'
    )
    receipt = models.ReadReceipt.model_validate_json(text)
    assert receipt.model_dump(mode="json") == {"message_id": "m", "read_at": "2024-03-04T09:30:15Z"}


def test_events_are_immutable() -> None:
    receipt = models.ReadReceipt(message_id="m", read_at=T0)
    with pytest.raises(ValidationError):
        receipt.message_id = "other"  # type: ignore[misc]


def test_contract_defaults() -> None:
    request = models.SendRequest.model_validate(send_request())
    assert request.organisation_type == "gp"
    assert request.nation == "england"
    assert request.batch_id is None
    assert request.email_selected is False
    assert request.number_overridden is False
    assert request.patient.mobile is None
    assert request.patient.email is None
    assert request.patient.deceased is False

    practice = models.PracticeSettings(ods_code="A81001")
    assert (practice.nhs_app_individual, practice.arm, practice.likely_to_fail_check) == (
        False,
        None,
        False,
    )
    eligibility = models.Eligibility(
        nhs_number=VALID_NHS[0], has_nhs_app=True, notifications_enabled=False, checked_at=T0
    )
    assert eligibility.proxy_only is False
    assert models.Response(message_id="m", responded_at=T0).attachments == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("organisation_type", "pharmacy"),
        ("nation", "ireland"),
        ("origin", "bulk"),
        ("message_type", "letter"),
        ("message_type", "SMS"),
    ],
)
def test_enumerations_are_closed(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as exc:
        models.SendRequest.model_validate(send_request(**{field: value}))
    assert field_errors(exc) == {(field,)}


def test_attachments_cannot_be_negative() -> None:
    with pytest.raises(ValidationError):
        models.Response(message_id="m", responded_at=T0, attachments=-1)


# --- PilotMetric: the fields of its kind --------------------------------------------------

# The contract's fields per kind. Counts and dimensions must be present; the rates and
# statistics (response_rate, treatment_rate, ...) may be null where they are undefined
# (nothing sent yet), so they are not required.
REQUIRED_BY_KIND: dict[str, tuple[str, ...]] = {
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
}

FULL_METRICS: dict[str, dict[str, Any]] = {
    "arm_rate": {
        "kind": "arm_rate",
        "key": "arm_rate|treatment|all|3600",
        "arm": "treatment",
        "message_type": "all",
        "horizon_seconds": 3600,
        "sent": 120,
        "responded": 30,
        "response_rate": 0.25,
        "read": 80,
        "fallbacks": 12,
        "updated_at": T0,
    },
    "comparison": {
        "kind": "comparison",
        "key": "comparison|sms|86400",
        "message_type": "sms",
        "horizon_seconds": 86400,
        "treatment_rate": 0.31,
        "control_rate": 0.22,
        "difference": 0.09,
        "ci_low": 0.01,
        "ci_high": 0.17,
        "p_value": 0.03,
        "method": "newcombe",
        "updated_at": T0,
    },
    "trend": {
        "kind": "trend",
        "key": "trend|control|questionnaire|2024-03-04",
        "arm": "control",
        "message_type": "questionnaire",
        "day": date(2024, 3, 4),
        "sent": 40,
        "read": 0,
        "fallbacks": 3,
        "responded": 9,
        "updated_at": T0,
    },
}


@pytest.mark.parametrize("kind", sorted(FULL_METRICS))
def test_pilot_metric_of_each_kind_is_valid(kind: str) -> None:
    metric = models.PilotMetric.model_validate(FULL_METRICS[kind])
    assert metric.kind == kind


@pytest.mark.parametrize(
    ("kind", "field"),
    [(kind, field) for kind, fields in REQUIRED_BY_KIND.items() for field in fields],
)
def test_pilot_metric_requires_the_fields_of_its_kind(kind: str, field: str) -> None:
    data = {k: v for k, v in FULL_METRICS[kind].items() if k != field}
    with pytest.raises(ValidationError) as exc:
        models.PilotMetric.model_validate(data)
    assert field in str(exc.value)
    with pytest.raises(ValidationError):
        models.PilotMetric.model_validate({**FULL_METRICS[kind], field: None})


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("arm_rate", "response_rate"),
        ("comparison", "treatment_rate"),
        ("comparison", "control_rate"),
        ("comparison", "difference"),
        ("comparison", "ci_low"),
        ("comparison", "ci_high"),
        ("comparison", "p_value"),
    ],
)
def test_pilot_metric_statistics_may_be_undefined(kind: str, field: str) -> None:
    data = {**FULL_METRICS[kind], field: None}
    assert getattr(models.PilotMetric.model_validate(data), field) is None


def test_pilot_metric_kind_is_closed_and_updated_at_required() -> None:
    with pytest.raises(ValidationError):
        models.PilotMetric.model_validate({**FULL_METRICS["trend"], "kind": "weekly"})
    data = {k: v for k, v in FULL_METRICS["trend"].items() if k != "updated_at"}
    with pytest.raises(ValidationError) as exc:
        models.PilotMetric.model_validate(data)
    assert ("updated_at",) in field_errors(exc)
