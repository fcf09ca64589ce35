"""What the practice sees of each message: its conversation status, and (for a batch
message) the outcome its batch counts. Pure: the per-message agent (``streams/messages.py``,
its ``Status`` part) feeds it a message's dispatch, send outcome and receipts, in any order.

From the individual messaging pilot page: a message sent by the NHS App shows
"sent - To: NHS App" and is never updated, not for its delivery, its reading, nor its
backup SMS; an SMS shows what a thread shows today, failed delivery included; an email is
sent (email providers give no delivery receipts). A batch counts each message once:
delivered (an SMS or NHS App delivery receipt, the backup SMS's included; a read NHS App
message was delivered), failed to deliver (an SMS that failed: the message itself or the
NHS App message's backup), sent (email), or not sent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

SMS_FAILURES = frozenset({"permanent_failure", "temporary_failure", "technical_failure"})
WITHOUT_VALID_MOBILE = frozenset({"not_uk_mobile", "contact_details_missing"})
LABELS = {
    "nhs_app": "sent - To: NHS App",
    "email": "sent - To: email",
    "sms": "sent - To: SMS",
}


@dataclass(frozen=True)
class Track:
    """One message, while something about it can still change (then the row ends)."""

    seen_at: float  # when the first fact arrived (epoch s): a row with no dispatch expires
    partition: int = 0  # of the message's topics: where its row lives
    channel: str | None = None  # from the dispatch
    batch_id: str | None = None
    dispatched: bool = False
    reason: str | None = None
    sent: bool = False
    delivered: bool = False
    failed: str | None = None  # the failure receipt's status (an SMS's)
    counted: bool = False  # its batch has its outcome
    shown: str | None = None  # the status last published
    closed: bool = False  # finished: facts read again after a crash change nothing

    def to_part(self) -> list[Any]:
        """The track as its part of the message's row: a JSON list, not an object of named
        fields (a pending NHS App message's part went from 145 to 67 bytes). ``seen_at`` in
        whole microseconds (exact both ways once made so, to 2100); the yes/no facts as bits
        of one number; the optional strings last, trailing ones left off while None."""
        flags = sum(1 << i for i, name in enumerate(_FLAGS) if getattr(self, name))
        part: list[Any] = [round(self.seen_at * 1e6), self.partition, flags]
        part += [getattr(self, name) for name in _TEXTS]
        while part[-1] is None:
            part.pop()
        return part

    @classmethod
    def from_part(cls, part: list[Any]) -> Track:
        seen_us, partition, flags, *texts = part
        fields: dict[str, Any] = {name: bool(flags >> i & 1) for i, name in enumerate(_FLAGS)}
        fields.update(zip(_TEXTS, texts, strict=False))
        return cls(seen_at=seen_us / 1e6, partition=partition, **fields)


# A stored format (rows live days in the changelog): add names at the end, never reorder.
_FLAGS = ("dispatched", "sent", "delivered", "counted", "closed")
_TEXTS = ("channel", "reason", "shown", "batch_id", "failed")  # the likeliest set first


def on_dispatch(t: Track, channel: str, reason: str, batch_id: str | None) -> Track:
    return replace(t, dispatched=True, channel=channel, reason=reason, batch_id=batch_id)


def on_sent(t: Track) -> Track:
    return replace(t, sent=True)


def on_receipt(t: Track, channel: str, status: str, leg: str) -> Track:
    """A delivery receipt. The NHS App's own failures change nothing shown or counted: the
    backup SMS follows, and its receipts do."""
    if status == "delivered" and channel in ("sms", "nhs_app"):
        return replace(t, delivered=True)
    if channel == "sms" and status in SMS_FAILURES and t.failed is None:
        return replace(t, failed=status)
    return t


def on_read(t: Track) -> Track:
    return replace(t, delivered=True)  # read in the NHS App: it was delivered


def shown(t: Track) -> tuple[str, str, str | None] | None:
    """(status, label, reason) for the conversation thread, or None (nothing to show yet)."""
    if not t.dispatched:
        return None
    if t.channel == "none":
        return "not_sent", "Not sent", t.reason
    if t.channel in ("nhs_app", "email"):
        return ("sent", LABELS[t.channel], None) if t.sent else None
    # SMS: the message's own receipts (a failure stands: a late "delivered" is noise)
    if t.failed is not None:
        return "failed", "Failed to deliver", t.failed
    if t.delivered:
        return "delivered", "Delivered", None
    return ("sent", LABELS["sms"], None) if t.sent else None


def outcome(t: Track) -> str | None:
    """What the message's batch counts, once it is known."""
    if not t.dispatched or t.batch_id is None:
        return None
    if t.channel == "none":
        return "not_sent"
    if t.delivered:
        return "delivered"
    if t.failed is not None:
        return "failed"
    if t.channel == "email" and t.sent:
        return "sent"
    return None


def finished(t: Track) -> bool:
    """Nothing more will be shown or counted: the row can go."""
    if not t.dispatched:
        return False
    current = shown(t)
    final_shown = current is not None and (
        t.channel != "sms" or current[0] in ("delivered", "failed", "not_sent")
    )
    return final_shown and (t.batch_id is None or t.counted)


def closed(t: Track, now: float) -> Track:
    """What is kept of a finished message, for ``CLOSED_KEEP_SECONDS``: that it is finished.
    A crash re-reads events from the last committed offset of each topic, so a dispatch and
    a "sent" can come again after the receipt that settled the message; without this mark
    they would publish "sent" over "delivered"."""
    return Track(seen_at=now, partition=t.partition, closed=True)
