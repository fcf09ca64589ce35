"""Status: each message's conversation status on ``message-status``, and each batch
message's outcome on ``batch-progress`` for its batch's counters.

Takes a message's dispatch, its send outcome (``send-outcomes``) and its receipts from the
per-message agent (``streams/messages.py``), which sees them in partition order; the rules
are ``rules/status.py``. Its part of the message's row matters only while something about
the message can still change (an SMS awaiting its receipt, a batch message awaiting its
outcome), at most ``KEEP_SENT_METRICS_SECONDS``: state follows pending work.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from appfirst.rules import status as rules
from appfirst.topics.catalogue import SEND_OUTCOMES
from appfirst.topics.models import MessageStatus

if TYPE_CHECKING:
    from appfirst.streams.context import Context
    from appfirst.streams.messages import Seen

# How long a finished message's mark is kept: far past any re-read after a crash (offsets
# are committed every few seconds), unless the keep window is set shorter.
CLOSED_KEEP_SECONDS = 3600.0


class Status:
    """Each message's conversation status, and each batch message's outcome: its part of
    the message's row is a ``rules.Track``."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.settings = context.settings
        self.clock = context.clock
        self.io = context.io
        self.topics = context.topics

    def end(self, raw: Any) -> float:
        """A finished message's mark ends an hour after it finished; a track nothing settles
        (an SMS whose receipt never came, a receipt whose dispatch never did, an NHS App
        message with no live sends) ends ``KEEP_SENT_METRICS_SECONDS`` (8 days: a batch's
        7-day response window, and a day) after its first fact."""
        track = rules.Track.from_part(raw)
        if track.closed:
            return track.seen_at + min(CLOSED_KEEP_SECONDS, self.settings.keep_settled_seconds)
        return track.seen_at + self.settings.keep_sent_metrics_seconds

    async def take(self, seen: Seen, raw: Any) -> Any:
        """The message's new track after ``seen`` (having sent what it shows), or None if
        nothing changed."""
        change = _change(seen)
        if change is None:
            return None
        old = (
            rules.Track.from_part(raw)
            if raw
            else rules.Track(self.clock.now().timestamp(), seen.event.message.partition)
        )
        if old.closed:
            return None  # finished already: this is a re-read
        new = await self._publish(seen.message_id, change(old))
        if rules.finished(new):
            new = rules.closed(new, self.clock.now().timestamp())
        row = new.to_part()
        return None if row == raw else row

    async def _publish(self, mid: str, t: rules.Track) -> rules.Track:
        """Write what changed: the thread's status, and the batch's outcome (once)."""
        shown = rules.shown(t)
        if shown is not None and shown[0] != t.shown:
            state, label, reason = shown
            status = MessageStatus.model_validate(
                {
                    "message_id": mid,
                    "channel": t.channel,
                    "status": state,
                    "label": label,
                    "reason": reason,
                    "batch_id": t.batch_id,
                    "updated_at": self.clock.now(),
                }
            )
            await self.io.send(self.topics.message_status, mid.encode(), self.io.encode(status))
            t = replace(t, shown=state)
        outcome = rules.outcome(t)
        if outcome is not None and not t.counted and t.batch_id is not None:
            fact = {
                "message_id": mid,
                "outcome": outcome,
                "without_valid_mobile": outcome == "not_sent"
                and t.reason in rules.WITHOUT_VALID_MOBILE,
            }
            await self.io.send(
                self.topics.batch_progress, t.batch_id.encode(), json.dumps(fact).encode()
            )
            t = replace(t, counted=True)
        return t


def _change(seen: Seen) -> Any:
    """How ``seen`` changes its message's track, or None if it says nothing of it."""
    value = seen.value
    if seen.topic == "dispatches":
        return lambda t: rules.on_dispatch(t, value.channel, value.reason, value.batch_id)
    if seen.topic == SEND_OUTCOMES:
        return rules.on_sent
    if seen.topic == "delivery-receipts":
        return lambda t: rules.on_receipt(t, value.channel, value.status, value.leg)
    if seen.topic == "read-receipts":
        return rules.on_read
    return None
