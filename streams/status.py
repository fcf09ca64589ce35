"""Status: each message's conversation status on ``message-status``, and each batch
message's outcome on ``batch-progress`` for its batch's counters.

Reads a message's dispatch, its send outcome (``send-outcomes``) and its receipts, all keyed
by message id and co-partitioned, so one agent sees them in partition order; the rules are
``rules/status.py``. A row is kept only while something about the message can still change
(an SMS awaiting its receipt, a batch message awaiting its outcome) and at most
``KEEP_SENT_METRICS_SECONDS``, its end kept by ``streams/retention.py`` as every
per-message table's is: state follows pending work.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from appfirst.rules import status as rules
from appfirst.streams.app import acting_for
from appfirst.topics.catalogue import SEND_OUTCOMES
from appfirst.topics.models import DeliveryReceipt, Dispatch, MessageStatus, ReadReceipt

if TYPE_CHECKING:
    from appfirst.streams.app import JsonRows
    from appfirst.streams.context import Context
    from appfirst.streams.retention import Retained

# How long a finished message's mark is kept: far past any re-read after a crash (offsets
# are committed every few seconds), unless the keep window is set shorter.
CLOSED_KEEP_SECONDS = 3600.0


class Status:
    """Each message's conversation status, and each batch message's outcome (agent
    ``follow``)."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.settings = context.settings
        self.clock = context.clock
        self.io = context.io
        self.topics = topics = context.topics
        self.tracks: JsonRows = context.json_rows("message-tracks")
        self.track_rows: Retained = context.retention.retain(
            "message-tracks", self.tracks, "dispatches", self._end_of
        )
        self.follow: Any = context.agent(topics.status_source)(self._follow)

    def _end_of(self, raw: Any) -> tuple[int, float]:
        """A finished message's mark ends an hour after it finished; a row nothing settles
        (an SMS whose receipt never came, a receipt whose dispatch never did, an NHS App
        message with no live sends) ends ``KEEP_SENT_METRICS_SECONDS`` (8 days: a batch's
        7-day response window, and a day) after its first fact."""
        track = rules.Track.from_json(raw)
        if track.closed:
            return track.partition, track.seen_at + min(
                CLOSED_KEEP_SECONDS, self.settings.keep_settled_seconds
            )
        return track.partition, track.seen_at + self.settings.keep_sent_metrics_seconds

    async def _follow(self, stream: Any) -> None:
        # A batch at a time, and what it sends made durable before its rows are written: a
        # row that says "counted" or "shown" is then never ahead of what reached Kafka (a
        # crash in between re-reads the events and sends again; both topics take repeats).
        async for batch in stream.take_events(500, within=0.05):
            rows: dict[str, tuple[Any, rules.Track]] = {}
            for event in batch:
                if not self.context.current(event):
                    continue  # read again by the partition's owner (streams/rewind.py)
                seen = await self._fact(event)
                if seen is None:
                    continue
                mid, change = seen
                if mid in rows:
                    _, old = rows[mid]
                else:
                    raw = self.tracks.get(mid)
                    old = (
                        rules.Track.from_json(raw)
                        if raw
                        else rules.Track(self.clock.now().timestamp(), event.message.partition)
                    )
                if old.closed:
                    continue  # finished already: this is a re-read
                new = await self._publish(mid, change(old))
                rows[mid] = (event, new)
            if not rows:
                continue
            await self.io.durable()
            for mid, (event, new) in rows.items():
                with acting_for(event):
                    if rules.finished(new):
                        new = rules.closed(new, self.clock.now().timestamp())
                    row = new.to_json()
                    self.tracks[mid] = row
                    self.track_rows.note(mid, row)

    async def _fact(self, event: Any) -> tuple[str, Any] | None:
        """The message id and how this event changes its track, or None to ignore it."""
        io = self.io
        topic = io.short_topic(event.message.topic)
        if topic == "dispatches":
            d = await io.decode(event, Dispatch, "status")
            if d is None:
                return None
            return d.message_id, lambda t: rules.on_dispatch(t, d.channel, d.reason, d.batch_id)
        if topic == SEND_OUTCOMES:
            outcome = await io.decode_outcome(event, "status")
            return None if outcome is None else (outcome.message_id, rules.on_sent)
        if topic == "delivery-receipts":
            r = await io.decode(event, DeliveryReceipt, "status")
            if r is None:
                return None
            return r.message_id, lambda t: rules.on_receipt(t, r.channel, r.status, r.leg)
        read = await io.decode(event, ReadReceipt, "status")
        if read is None:
            return None
        return read.message_id, rules.on_read

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
            t = rules.Track.from_json({**t.to_json(), "shown": state})
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
            t = rules.Track.from_json({**t.to_json(), "counted": True})
        return t
