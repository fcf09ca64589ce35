"""The fallback rules as a pure state machine over one NHS App message.

Events may arrive in any order (a read before its dispatch, a delivery after a read); each
``on_*`` function returns the new state, and ``due`` says whether and when a fallback is
owed. The tracker persists the state and sweeps what is due; nothing here reads a clock.

When the deadline starts (``due_at``): at the NHS App's ``delivered`` receipt; else when the
NHS App accepted the message (the dispatcher's outcome on ``send-outcomes``); else, while
the message still waits in the NHS App lane, not yet: counting from routing would let a
backlog in front of the NHS App send the SMS before the app message. A message whose send
is not heard of within ``APPFIRST_NHS_APP_OUTCOME_WAIT_SECONDS`` of dispatch is counted from
there, so that no fallback depends on an outcome arriving. With no live sends (replay,
``APPFIRST_PROVIDERS=off``) the deadline starts at dispatch, as the contract first said.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from appfirst.topics.models import DeliveryReceipt, Dispatch, FallbackReason

# What the fallback SMS needs of the dispatch. Nothing else is kept: a pending deadline
# costs memory in proportion to what it holds, and personal data held is data to protect.
FALLBACK_FIELDS = ("ods_code", "arm", "origin", "message_type", "mobile", "body")

IMMEDIATE: dict[str, FallbackReason] = {
    "unnotified": "unnotified",
    "rejected": "rejected",
    "failed": "failed",
}


TIMES = ("dispatched_at", "accepted_at", "delivered_at", "read_at", "failed_at")

# Each field's name in a message's row (``TrackState.to_part``): a pending deadline is held
# in memory until it settles, up to a day for a batch, and its field names and ISO times
# were a third of its bytes.
PART_NAMES = {
    "deadline_seconds": "D",
    "dispatched_at": "t",
    "send_wait_seconds": "w",
    "accepted_at": "a",
    "delivered_at": "v",
    "read_at": "r",
    "failure": "f",
    "failed_at": "ft",
    "fallback_emitted": "e",
    "fallback_reason": "er",
    "dispatch": "d",
    "ends_at": "end",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class TrackState:
    message_id: str
    partition: int
    deadline_seconds: float | None = None  # set by the NHS App dispatch
    dispatched_at: datetime | None = None
    send_wait_seconds: float | None = None  # live sends: how long to wait for acceptance
    accepted_at: datetime | None = None  # the NHS App accepted it (or it was unconfirmed)
    delivered_at: datetime | None = None
    read_at: datetime | None = None
    failure: FallbackReason | None = None
    failed_at: datetime | None = None
    fallback_emitted: bool = False
    fallback_reason: FallbackReason | None = None
    dispatch: dict[str, Any] | None = None  # what the fallback SMS needs
    ends_at: float | None = None  # wall clock, epoch: when the row may go (None: pending)

    def to_json(self) -> dict[str, Any]:
        """The state as JSON values; fields at their default are left out."""
        data = asdict(self)
        for name in TIMES:
            value = data[name]
            data[name] = value.isoformat() if value is not None else None
        return {k: v for k, v in data.items() if v is not None and v is not False}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrackState:
        data = dict(data)
        for name in TIMES:
            if data.get(name) is not None:
                data[name] = datetime.fromisoformat(data[name])
        return cls(**data)

    def to_part(self) -> dict[str, Any]:
        """The state as the tracker keeps it in a message's row: short names, times as
        whole microseconds since the epoch (exact), the dispatch's fields as a list in
        ``FALLBACK_FIELDS`` order; the message id and partition are the row's own."""
        part: dict[str, Any] = {}
        for name, short in PART_NAMES.items():
            value = getattr(self, name)
            if value is None or value is False:
                continue
            if name in TIMES:
                value = (value - _EPOCH) // _MICROSECOND
            elif name == "dispatch":
                value = [value.get(field) for field in FALLBACK_FIELDS]
            elif value is True:
                value = 1
            part[short] = value
        return part

    @classmethod
    def from_part(cls, message_id: str, partition: int, part: dict[str, Any]) -> TrackState:
        values: dict[str, Any] = {}
        for name, short in PART_NAMES.items():
            if short not in part:
                continue
            value = part[short]
            if name in TIMES:
                value = _EPOCH + value * _MICROSECOND
            elif name == "dispatch":
                value = dict(zip(FALLBACK_FIELDS, value, strict=True))
            elif name == "fallback_emitted":
                value = bool(value)
            values[name] = value
        return cls(message_id, partition, **values)

    def encode(self) -> bytes:
        """Compact JSON, every field by its name (the tracker keeps ``to_part``)."""
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> TrackState:
        return cls.from_json(json.loads(raw))


def on_dispatch(
    state: TrackState,
    dispatch: Dispatch,
    deadline_seconds: float,
    *,
    send_wait_seconds: float | None = None,
) -> TrackState:
    """``send_wait_seconds``: the message is really sent (providers on), so its deadline
    starts when the NHS App accepts it, or at the latest that long after dispatch."""
    if dispatch.channel != "nhs_app" or state.dispatched_at is not None:
        return state
    return replace(
        state,
        deadline_seconds=deadline_seconds,
        dispatched_at=dispatch.dispatched_at,
        send_wait_seconds=send_wait_seconds,
        dispatch={
            k: v for k, v in dispatch.model_dump(mode="json").items() if k in FALLBACK_FIELDS
        },
    )


def on_delivery(state: TrackState, receipt: DeliveryReceipt) -> TrackState:
    if receipt.channel != "nhs_app" or receipt.leg != "primary":
        return state
    if receipt.status == "delivered":
        if state.delivered_at is None or receipt.occurred_at < state.delivered_at:
            return replace(state, delivered_at=receipt.occurred_at)
        return state
    reason = IMMEDIATE.get(receipt.status)
    # The earliest failure decides, whatever order the failure receipts arrive in.
    if reason is not None and (state.failed_at is None or receipt.occurred_at < state.failed_at):
        return replace(state, failure=reason, failed_at=receipt.occurred_at)
    return state


def on_accepted(state: TrackState, accepted_at: datetime) -> TrackState:
    """The NHS App accepted the message (or its send was recorded unconfirmed) at
    ``accepted_at``; the earliest such outcome counts."""
    if state.accepted_at is None or accepted_at < state.accepted_at:
        return replace(state, accepted_at=accepted_at)
    return state


def on_read(state: TrackState, read_at: datetime) -> TrackState:
    if state.read_at is None or read_at < state.read_at:
        return replace(state, read_at=read_at)
    return state


def on_fallback_emitted(state: TrackState, reason: FallbackReason) -> TrackState:
    # Never owed again: the mobile and body are no longer needed, so no longer kept.
    return replace(state, fallback_emitted=True, fallback_reason=reason, dispatch=None)


def due_at(state: TrackState) -> datetime | None:
    """When the unread fallback falls due, ignoring reads (None until dispatched).

    From delivery when the message was delivered before it fell due counting from its
    acceptance; a delivery after that ("while no delivered receipt has come", the contract
    says) does not move a deadline that had passed. So the due time depends on when things
    happened, not on when their receipts were read: a replay gives the same fallbacks
    however its topics' events fall into batches."""
    if state.dispatched_at is None or state.deadline_seconds is None:
        return None
    deadline = timedelta(seconds=state.deadline_seconds)
    # With live sends, the backstop of a send never heard of. An acceptance before the
    # message fell due counting from there restarts it (the patient gets their hour with
    # the app message); one after it, like a late delivery, changes nothing.
    backstop = state.dispatched_at + timedelta(seconds=state.send_wait_seconds or 0)
    start = state.accepted_at or backstop
    if start >= backstop + deadline:
        start = backstop
    if state.delivered_at is not None and state.delivered_at < start + deadline:
        return state.delivered_at + deadline
    return start + deadline


def owed(state: TrackState) -> tuple[FallbackReason, datetime] | None:
    """The fallback this message is owed and since when, or None (none owed, ever or yet).

    A read before the due time (or before the failure) cancels, whatever order the
    receipts arrived in. A fallback already emitted is never owed again.
    """
    if state.fallback_emitted or state.dispatched_at is None:
        return None
    deadline = due_at(state)
    failure, failed_at = state.failure, state.failed_at
    # A failure after the message fell due unread changes nothing: the fallback was owed
    # then, for that, whenever the failure receipt is read.
    if (
        failure is not None
        and failed_at is not None
        and (deadline is None or failed_at <= deadline)
    ):
        if state.read_at is not None and state.read_at <= failed_at:
            return None
        return failure, failed_at
    if deadline is None:
        return None
    if state.read_at is not None and state.read_at < deadline:
        return None
    return "unread", deadline


def with_end(state: TrackState, now: float, keep_seconds: float) -> TrackState:
    """The state with its row's end: none while a fallback is owed (pending work), else
    ``keep_seconds`` after it was first seen owing nothing, so that a repeat of its
    dispatch within that time (re-read after a crash) finds it settled and owes nothing."""
    if owed(state) is not None:
        return state if state.ends_at is None else replace(state, ends_at=None)
    if state.ends_at is not None:
        return state
    return replace(state, ends_at=now + keep_seconds)


def due(state: TrackState, now: datetime) -> tuple[FallbackReason, datetime] | None:
    """The fallback to emit at ``now``, if one is owed and its time has come."""
    result = owed(state)
    if result is None or result[1] > now:
        return None
    return result


def pending(state: TrackState) -> bool:
    """Still waiting on a deadline (for the pending-deadlines gauge)."""
    return owed(state) is not None
