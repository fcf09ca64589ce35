"""Provider callbacks -> contract events (pure), and the references that tie them back.

A provider reference is the message_id for the primary send and ``<message_id>/fallback``
for the fallback SMS: ``/`` never occurs in a message_id, so the split is unambiguous.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from appfirst.errors import DecodeError
from appfirst.providers.nhsapp import COMMUNICATION_ID_SYSTEMS, REQUEST_ID_SYSTEM, identifier
from appfirst.topics.models import DeliveryReceipt, Leg, ReadReceipt, Response

FALLBACK_SUFFIX = "/fallback"

NHS_APP_STATUSES = {
    "delivered": "delivered",
    "notified": "notified",
    "unnotified": "unnotified",
    "rejected": "rejected",
    "failed": "failed",
}
# Accepted by Apple or Google, not yet shown: no contract event; Notified or Unnotified follows.
IGNORED_NHS_APP_STATUSES = frozenset({"notificationattempted"})
NOTIFY_STATUSES = {
    "delivered": "delivered",
    "permanent-failure": "permanent_failure",
    "temporary-failure": "temporary_failure",
    "technical-failure": "technical_failure",
}


def fallback_reference(message_id: str) -> str:
    return message_id + FALLBACK_SUFFIX


def split_reference(reference: str) -> tuple[str, Leg]:
    if reference.endswith(FALLBACK_SUFFIX):
        return reference.removesuffix(FALLBACK_SUFFIX), "fallback"
    return reference, "primary"


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise DecodeError("callback lacks a timestamp")
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DecodeError("callback timestamp is not RFC 3339") from exc
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def parse_nhs_app(task: dict[str, Any]) -> DeliveryReceipt | ReadReceipt | None:
    """A FHIR ``Task`` from the NHS App (a real-time receipt or a row of the daily receipts
    report). None for a status the contract has no event for (``NotificationAttempted``)."""
    if not isinstance(task, dict) or task.get("resourceType") != "Task":
        raise DecodeError("NHS App receipt is not a FHIR Task")
    reference = identifier(task, REQUEST_ID_SYSTEM)
    if reference is None:
        raise DecodeError("NHS App receipt has no request-id identifier")
    try:
        code = str(task["code"]["coding"][0]["code"]).lower()
    except (KeyError, IndexError, TypeError) as exc:
        raise DecodeError("NHS App receipt lacks code.coding") from exc
    if code in IGNORED_NHS_APP_STATUSES:
        return None
    message_id, leg = split_reference(reference)
    occurred = _timestamp(task.get("lastModified"))
    try:
        if code == "read":
            return ReadReceipt(message_id=message_id, read_at=occurred)
        status = NHS_APP_STATUSES.get(code)
        if status is None:
            raise DecodeError(f"unknown NHS App status {code!r}")
        return DeliveryReceipt(
            message_id=message_id,
            channel="nhs_app",
            status=status,
            occurred_at=occurred,
            provider_reference=identifier(task, COMMUNICATION_ID_SYSTEMS),
            leg=leg,
        )
    except ValidationError as exc:
        raise DecodeError("NHS App receipt does not make a valid receipt") from exc


def parse_notify(body: dict[str, Any]) -> DeliveryReceipt:
    """A GOV.UK Notify delivery receipt callback."""
    status = NOTIFY_STATUSES.get(str(body.get("status")))
    if status is None:
        raise DecodeError(f"unknown Notify status {body.get('status')!r}")
    channel = body.get("notification_type", "sms")
    if channel not in ("sms", "email"):
        raise DecodeError("unknown Notify notification_type")
    message_id, leg = split_reference(str(body.get("reference") or ""))
    when = body.get("completed_at") or body.get("sent_at") or body.get("created_at")
    try:
        return DeliveryReceipt(
            message_id=message_id,
            channel=channel,
            status=status,
            occurred_at=_timestamp(when),
            provider_reference=body.get("id"),
            leg=leg,
        )
    except ValidationError as exc:
        raise DecodeError("Notify callback does not make a valid receipt") from exc


def parse_response(body: dict[str, Any]) -> Response:
    """A response from the patient response service; its reason says what is wrong (too
    many files, a file too big or of a type not accepted, a missing field)."""
    try:
        return Response.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'response'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise DecodeError(f"not a valid response: {problems}") from exc
