"""Requests we build and answers we read, checked against the providers' published shapes:
the NHS App API (NHSDigital/nhs-app-api ``specification/components/examples``) and
GOV.UK Notify (``/v2/notifications``, its error bodies and delivery-receipt callbacks)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from appfirst.errors import (
    DecodeError,
    ProviderRejected,
    ProviderUnavailable,
    Throttled,
    Unauthorised,
)
from appfirst.providers.base import Outbound
from appfirst.providers.callbacks import parse_nhs_app, parse_notify
from appfirst.providers.nhsapp import (
    COMMUNICATION_ID_SYSTEMS,
    REQUEST_ID_SYSTEM,
    communication_request,
    identifier,
    outcome_code,
    raise_for_outcome,
)
from appfirst.providers.notify import notification, raise_for_notify
from appfirst.topics.models import DeliveryReceipt, ReadReceipt

CAMPAIGN = "flu campaign 202208"
NHS_NUMBER = "9903002157"  # from the published in-app.json example
ODS = "B82041"
COMMUNICATION_ID = "8f7ec136-66eb-4a9e-97ca-5c7a53d2710c"


def _outbound(**overrides: Any) -> Outbound:
    fields: dict[str, Any] = {
        "channel": "nhs_app",
        "reference": "m-1",
        "message_id": "m-1",
        "ods_code": ODS,
        "body": "You have a new appointment, please confirm you can attend.",
        "message_type": "appointment_reminder",
        "nhs_number": NHS_NUMBER,
        "mobile": "07700900123",
        "email": "patient@example.com",
    }
    fields.update(overrides)
    return Outbound(**fields)


def _outcome(code: str, diagnostics: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code}
    if diagnostics is not None:
        issue["diagnostics"] = diagnostics
    return {"resourceType": "OperationOutcome", "issue": [issue]}


# --- NHS App: CommunicationRequest ---------------------------------------------------------
def test_communication_request_matches_the_published_in_app_example() -> None:
    request = communication_request(_outbound(), CAMPAIGN)

    assert set(request) == {
        "resourceType",
        "identifier",
        "status",
        "category",
        "payload",
        "recipient",
        "requester",
    }
    assert request["resourceType"] == "CommunicationRequest"
    assert request["status"] == "active"
    assert {"system": "https://fhir.nhs.uk/NHSApp/campaign-id", "value": CAMPAIGN} in request[
        "identifier"
    ]
    assert {"system": "https://fhir.nhs.uk/NHSApp/request-id", "value": "m-1"} in request[
        "identifier"
    ]
    assert len(request["identifier"]) == 2
    assert request["payload"] == [
        {"contentString": "You have a new appointment, please confirm you can attend."}
    ]
    assert request["recipient"] == [
        {
            "type": "Patient",
            "identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS_NUMBER},
        }
    ]
    assert request["requester"] == {
        "type": "Organization",
        "identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": ODS},
    }
    assert request["category"] == [{"text": "appointment_reminder"}]


def test_communication_request_carries_the_leg_reference_as_request_id() -> None:
    request = communication_request(_outbound(reference="m-1/fallback"), CAMPAIGN)
    assert identifier(request, REQUEST_ID_SYSTEM) == "m-1/fallback"


# --- NHS App: identifiers and OperationOutcome ---------------------------------------------
def test_identifier_finds_the_value_of_a_system() -> None:
    task = {
        "identifier": [
            {"system": "https://fhir.nhs.uk/NHSApp/campaign-id", "value": "c"},
            {"system": "https://fhir.nhs.uk/NHSApp/request-id", "value": "m-1"},
            {"system": "http://fhir.nhs.uk/Id/nhs-app-communication-id", "value": "abc"},
        ]
    }
    assert identifier(task, "https://fhir.nhs.uk/NHSApp/request-id") == "m-1"
    assert identifier(task, "https://fhir.nhs.uk/NHSApp/campaign-id") == "c"
    # The spec spells the communication-id system with both http and https.
    assert identifier(task, COMMUNICATION_ID_SYSTEMS) == "abc"
    assert identifier(task, frozenset({"https://example.org/other"})) is None


@pytest.mark.parametrize(
    "resource",
    [
        {},
        {"identifier": None},
        {"identifier": []},
        {"identifier": ["not-a-dict", {"system": REQUEST_ID_SYSTEM}]},
        {"identifier": [{"system": REQUEST_ID_SYSTEM, "value": ""}]},
    ],
)
def test_identifier_is_none_when_absent_or_empty(resource: dict[str, Any]) -> None:
    assert identifier(resource, REQUEST_ID_SYSTEM) is None


def test_outcome_code_reads_the_first_issue() -> None:
    response = httpx.Response(400, json=_outcome("invalid", "NHS Number is invalid"))
    assert outcome_code(response) == ("invalid", "NHS Number is invalid")
    assert outcome_code(httpx.Response(401, json=_outcome("forbidden"))) == ("forbidden", "")


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(502, text="<html>Bad gateway</html>"),
        httpx.Response(400, json={"resourceType": "OperationOutcome", "issue": []}),
        httpx.Response(400, json={"message": "not an OperationOutcome"}),
    ],
)
def test_outcome_code_of_something_else_is_unknown(response: httpx.Response) -> None:
    assert outcome_code(response) == ("unknown", "")


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_raise_for_outcome_passes_success(status: int) -> None:
    raise_for_outcome("nhs_app", httpx.Response(status, json={}))  # returns, raises nothing


@pytest.mark.parametrize(
    ("status", "code", "diagnostics"),
    [
        (400, "invalid", "NHS Number is invalid"),
        (403, "forbidden", None),
        # 403permissionsMissing.json
        (
            403,
            "security",
            "Supplier with ID c53d9ed3-b4fe-408e-8908-d185aa7d6fec does not have channel "
            "Push Notification permission",
        ),
        (404, "not-found", None),
    ],
)
def test_raise_for_outcome_rejects_a_bad_request(
    status: int, code: str, diagnostics: str | None
) -> None:
    response = httpx.Response(status, json=_outcome(code, diagnostics))
    with pytest.raises(ProviderRejected) as caught:
        raise_for_outcome("nhs_app", response)
    assert caught.value.status == status
    assert caught.value.code == code
    assert caught.value.provider == "nhs_app"


def test_raise_for_outcome_401_is_unauthorised() -> None:
    # 401invalidAccessToken.json
    with pytest.raises(Unauthorised) as caught:
        raise_for_outcome("nhs_app", httpx.Response(401, json=_outcome("forbidden")))
    assert caught.value.status == 401
    assert not isinstance(caught.value, ProviderRejected)


@pytest.mark.parametrize(
    ("diagnostics", "kind"),
    [
        (
            "Your application, my-app, has exceeded its quota of 100 requests every 1 minute(s) "
            "and is being rate limited.",
            "quota_per_app",
        ),
        (
            "Your application has triggered a spike arrest and is being rate limited.",
            "spike_arrest",
        ),
        ("The proxy has exceeded its quota and is being rate limited.", "quota_per_proxy"),
    ],
)
def test_raise_for_outcome_429_is_throttled_with_kind(diagnostics: str, kind: str) -> None:
    response = httpx.Response(
        429, json=_outcome("throttled", diagnostics), headers={"Retry-After": "2"}
    )
    with pytest.raises(Throttled) as caught:
        raise_for_outcome("nhs_app", response)
    assert caught.value.kind == kind
    assert caught.value.retry_after == 2.0
    assert caught.value.status == 429


# The published 429 examples, verbatim.
@pytest.mark.parametrize(
    ("diagnostics", "kind"),
    [
        pytest.param(
            "Your application, my-app, has exceeded its quota of 100 requests every 1 "
            "minute(s) and is being rate limited.",
            "quota_per_app",
            id="429throttled-quotaperapp",
        ),
        pytest.param(
            "Your application, my-app, has created a spike in traffic and is being rate "
            "limited. Please reduce the frequency of your requests.",
            "spike_arrest",
            id="429throttled-spikearrestperapp",
        ),
        pytest.param(
            "This API is currently receiving a high volume of requests and is being rate limited.",
            "quota_per_proxy",
            id="429throttled-quotaperproxy",
        ),
    ],
)
def test_published_429_examples_get_their_kind(diagnostics: str, kind: str) -> None:
    response = httpx.Response(429, json=_outcome("throttled", diagnostics))
    with pytest.raises(Throttled) as caught:
        raise_for_outcome("nhs_app", response)
    assert caught.value.kind == kind


def test_raise_for_outcome_429_without_retry_after() -> None:
    with pytest.raises(Throttled) as caught:
        raise_for_outcome("nhs_app", httpx.Response(429, json=_outcome("throttled")))
    assert caught.value.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_raise_for_outcome_5xx_is_unavailable_not_rejected(status: int) -> None:
    response = httpx.Response(status, json=_outcome("transient"), headers={"Retry-After": "5"})
    with pytest.raises(ProviderUnavailable) as caught:
        raise_for_outcome("nhs_app", response)
    assert type(caught.value) is ProviderUnavailable
    assert not isinstance(caught.value, ProviderRejected)
    assert caught.value.status == status
    assert caught.value.retry_after == 5.0


# --- GOV.UK Notify: send requests and errors -----------------------------------------------
def test_notification_sms() -> None:
    path, body = notification(_outbound(channel="sms", reference="m-1/fallback"), "tmpl-sms")
    assert path == "/v2/notifications/sms"
    assert body == {
        "phone_number": "07700900123",
        "template_id": "tmpl-sms",
        "personalisation": {
            "body": "You have a new appointment, please confirm you can attend.",
            "message_type": "appointment_reminder",
        },
        "reference": "m-1/fallback",
    }


def test_notification_email() -> None:
    path, body = notification(_outbound(channel="email"), "tmpl-email")
    assert path == "/v2/notifications/email"
    assert body == {
        "email_address": "patient@example.com",
        "template_id": "tmpl-email",
        "personalisation": {
            "body": "You have a new appointment, please confirm you can attend.",
            "message_type": "appointment_reminder",
        },
        "reference": "m-1",
    }


def test_notification_refuses_the_nhs_app_channel() -> None:
    with pytest.raises(ProviderRejected) as caught:
        notification(_outbound(channel="nhs_app"), "tmpl")
    assert caught.value.provider == "notify"


def _notify_error(status: int, error: str, message: str, **kwargs: Any) -> httpx.Response:
    body = {"status_code": status, "errors": [{"error": error, "message": message}]}
    return httpx.Response(status, json=body, **kwargs)


@pytest.mark.parametrize("status", [200, 201])
def test_raise_for_notify_passes_success(status: int) -> None:
    raise_for_notify(httpx.Response(status, json={"id": "x"}))  # returns, raises nothing


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("BadRequestError", "Can't send to this recipient using a team-only API key"),
        ("ValidationError", "phone_number Not a UK mobile number"),
    ],
)
def test_raise_for_notify_400_is_rejected(error: str, message: str) -> None:
    with pytest.raises(ProviderRejected) as caught:
        raise_for_notify(_notify_error(400, error, message))
    assert caught.value.status == 400
    assert caught.value.code == error
    assert caught.value.provider == "notify"


def test_raise_for_notify_403_auth_error_is_unauthorised() -> None:
    response = _notify_error(403, "AuthError", "Invalid token: API key not found")
    with pytest.raises(Unauthorised) as caught:
        raise_for_notify(response)
    assert caught.value.status == 403
    assert caught.value.retry_after == 30.0


@pytest.mark.parametrize(
    ("error", "message", "kind"),
    [
        (
            "RateLimitError",
            "Exceeded rate limit for key type LIVE of 3000 requests per 60 seconds",
            "rate_limit",
        ),
        ("TooManyRequestsError", "Exceeded send limits (250000) for today", "daily_limit"),
    ],
)
def test_raise_for_notify_429_is_throttled(error: str, message: str, kind: str) -> None:
    with pytest.raises(Throttled) as caught:
        raise_for_notify(_notify_error(429, error, message, headers={"Retry-After": "2"}))
    assert caught.value.kind == kind
    assert caught.value.retry_after == 2.0


def test_raise_for_notify_429_without_retry_after_waits_a_minute() -> None:
    with pytest.raises(Throttled) as caught:
        raise_for_notify(_notify_error(429, "RateLimitError", "Exceeded rate limit"))
    assert caught.value.retry_after == 60.0


def test_raise_for_notify_500_is_unavailable() -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        raise_for_notify(_notify_error(500, "Exception", "Internal server error"))
    assert type(caught.value) is ProviderUnavailable
    assert caught.value.status == 500


# --- NHS App: real-time receipt callbacks --------------------------------------------------
def _task(status_code: str, reference: str | None = "m-1", **overrides: Any) -> dict[str, Any]:
    identifiers = [{"system": "https://fhir.nhs.uk/NHSApp/campaign-id", "value": "c"}]
    if reference is not None:
        identifiers.append({"system": "https://fhir.nhs.uk/NHSApp/request-id", "value": reference})
    identifiers.append(
        {"system": "http://fhir.nhs.uk/Id/nhs-app-communication-id", "value": COMMUNICATION_ID}
    )
    task: dict[str, Any] = {
        "resourceType": "Task",
        "intent": "order",
        "identifier": identifiers,
        "status": "completed",
        "code": {
            "coding": [
                {
                    "system": "https://fhir.nhs.uk/CodeSystem/NHSApp-Communication-Status",
                    "code": status_code,
                }
            ]
        },
        "authoredOn": "2021-08-05T13:20:52+00:00",
        "lastModified": "2021-08-05T13:22:52+00:00",
    }
    task.update(overrides)
    return task


LAST_MODIFIED = datetime(2021, 8, 5, 13, 22, 52, tzinfo=UTC)


def test_read_task_is_a_read_receipt() -> None:
    receipt = parse_nhs_app(_task("Read"))
    assert isinstance(receipt, ReadReceipt)
    assert receipt.message_id == "m-1"
    assert receipt.read_at == LAST_MODIFIED
    assert receipt.read_at.tzinfo is not None


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("Delivered", "delivered"),
        ("Notified", "notified"),
        ("Unnotified", "unnotified"),
        ("Rejected", "rejected"),
    ],
)
def test_status_task_is_a_delivery_receipt(code: str, status: str) -> None:
    receipt = parse_nhs_app(_task(code))
    assert receipt == DeliveryReceipt(
        message_id="m-1",
        channel="nhs_app",
        status=status,  # type: ignore[arg-type]
        occurred_at=LAST_MODIFIED,
        provider_reference=COMMUNICATION_ID,
        leg="primary",
    )


def test_fallback_reference_gives_the_fallback_leg() -> None:
    receipt = parse_nhs_app(_task("Delivered", reference="m-1/fallback"))
    assert isinstance(receipt, DeliveryReceipt)
    assert receipt.message_id == "m-1"
    assert receipt.leg == "fallback"


def test_zulu_timestamps_from_the_receipts_report_are_read() -> None:
    receipt = parse_nhs_app(_task("Notified", lastModified="2022-08-19T09:16:02Z"))
    assert isinstance(receipt, DeliveryReceipt)
    assert receipt.occurred_at == datetime(2022, 8, 19, 9, 16, 2, tzinfo=UTC)


def test_notification_attempted_has_no_event() -> None:
    assert parse_nhs_app(_task("NotificationAttempted")) is None


@pytest.mark.parametrize(
    "task",
    [
        _task("Delivered", reference=None),
        _task("Delivered", resourceType="CommunicationRequest"),
        _task("Opened"),
        _task("Delivered", code={"coding": []}),
        _task("Delivered", lastModified=None),
        _task("Delivered", lastModified="yesterday"),
    ],
    ids=[
        "no-request-id",
        "not-a-task",
        "unknown-code",
        "no-coding",
        "no-timestamp",
        "bad-timestamp",
    ],
)
def test_malformed_task_is_a_decode_error(task: dict[str, Any]) -> None:
    with pytest.raises(DecodeError):
        parse_nhs_app(task)


# --- GOV.UK Notify: delivery-receipt callbacks ---------------------------------------------
def _notify_callback(status: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "740e5834-3a29-46b4-9a6f-16142fde533a",
        "reference": "m-1/fallback",
        "to": "07700900123",
        "status": status,
        "created_at": "2017-05-14T12:15:30.000000Z",
        "completed_at": "2017-05-14T12:15:40.000000Z",
        "sent_at": "2017-05-14T12:15:35.000000Z",
        "notification_type": "sms",
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("delivered", "delivered"),
        ("permanent-failure", "permanent_failure"),
        ("temporary-failure", "temporary_failure"),
        ("technical-failure", "technical_failure"),
    ],
)
def test_notify_callback_statuses(status: str, expected: str) -> None:
    receipt = parse_notify(_notify_callback(status))
    assert receipt == DeliveryReceipt(
        message_id="m-1",
        channel="sms",
        status=expected,  # type: ignore[arg-type]
        occurred_at=datetime(2017, 5, 14, 12, 15, 40, tzinfo=UTC),
        provider_reference="740e5834-3a29-46b4-9a6f-16142fde533a",
        leg="fallback",
    )


def test_notify_email_callback_without_completed_at_uses_sent_at() -> None:
    receipt = parse_notify(
        _notify_callback("delivered", notification_type="email", reference="m-2", completed_at=None)
    )
    assert receipt.channel == "email"
    assert receipt.leg == "primary"
    assert receipt.message_id == "m-2"
    assert receipt.occurred_at == datetime(2017, 5, 14, 12, 15, 35, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [
        _notify_callback("sending"),
        _notify_callback("delivered", notification_type="letter"),
        _notify_callback("delivered", reference=None),
    ],
    ids=["unknown-status", "letter", "no-reference"],
)
def test_malformed_notify_callback_is_a_decode_error(body: dict[str, Any]) -> None:
    with pytest.raises(DecodeError):
        parse_notify(body)
