"""Messages: one agent and one row for each message's events.

Four things follow every message by its id: an NHS App message's deadline
(``streams/tracker.py``), what the practice's conversation thread shows
(``streams/status.py``), the pilot's facts (``streams/metrics.MessageFacts``) and the number
its SMS went to, for a failure receipt to name (``streams/contactability.py``). Each was an
agent with a table of its own: every dispatch was read four times and each message kept
four rows, each write a changelog record. Here one agent reads each event once, decodes
it once, lets the four take what they need from it, and keeps one row per message with a
part for each (``"t"``, ``"s"``, ``"m"``, ``"c"``).

A batch at a time: what the parts send is made durable before their rows are written, so a
row that says "counted", "shown" or "joined" is never ahead of what reached Kafka. A crash
in between re-reads the events and sends again: ``message-status``, ``batch-progress`` and
``failed-numbers`` take repeats, but a pilot fact sent again is counted again, so that
window is kept to one flush, and a clean stop finishes its batch first. A batch overtaken
by a rebalance writes nothing (its events are read again by the partition's owner, and its
facts counted again). A row ends when the last of its parts does
(``streams/retention.py``), and not while a fallback is owed.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appfirst.streams.app import acting_for
from appfirst.streams.contactability import Contactability
from appfirst.streams.io import log
from appfirst.streams.metrics import MessageFacts
from appfirst.streams.status import Status
from appfirst.streams.tracker import Tracker
from appfirst.topics.catalogue import SEND_OUTCOMES
from appfirst.topics.models import DeliveryReceipt, Dispatch, Fallback, ReadReceipt, Response

if TYPE_CHECKING:
    from appfirst.streams.context import Context
    from appfirst.streams.failed_numbers import FailedNumbers
    from appfirst.streams.retention import Retained

AGENT = "messages"  # what its dead letters name
MODELS: dict[str, Any] = {
    "dispatches": Dispatch,
    "delivery-receipts": DeliveryReceipt,
    "read-receipts": ReadReceipt,
    "fallbacks": Fallback,
    "responses": Response,
}


@dataclass(frozen=True)
class Seen:
    """One event of a message, decoded: ``value`` is the topic's model (a ``SendOutcome``
    for ``send-outcomes``)."""

    message_id: str
    topic: str
    value: Any
    event: Any


class Messages:
    """The per-message agent ``follow`` and its table ``message-rows``."""

    def __init__(self, context: Context, failed: FailedNumbers) -> None:
        self.context = context
        self.io = context.io
        # message_id -> {"p": changelog partition, "end": epoch or None while a fallback is
        # owed, "t": ..., "s": ..., "m": ..., "c": ...}
        self.rows = context.json_rows("message-rows")
        self.tracker = Tracker(context, self.rows)
        self.status = Status(context)
        self.facts = MessageFacts(context)
        self.numbers = Contactability(context, failed)
        self.parts: tuple[tuple[str, Any], ...] = (
            ("t", self.tracker),
            ("s", self.status),
            ("m", self.facts),
            ("c", self.numbers),
        )
        self.retained: Retained = context.retention.retain(
            "message-rows", self.rows, "dispatches", lambda row: (row["p"], row["end"])
        )
        self.follow: Any = context.agent(context.topics.messages_source)(self._follow)

    async def _follow(self, stream: Any) -> None:
        async for batch in stream.take_events(500, within=0.05):
            # A clean stop cancels agents mid-event. A batch whose pilot facts went out but
            # whose rows were not written would be read again by the partition's next owner
            # and its facts counted twice (``metric-facts`` takes no repeats), a batch of
            # them where one agent per event risked one. So the batch is finished, its rows
            # written through, before the stop goes on (as the dispatcher finishes a send).
            work = asyncio.ensure_future(self._batch(batch))
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                await asyncio.wait({work})
                if not work.cancelled() and work.exception() is None:
                    await self.io.durable()
                elif not work.cancelled():
                    # Stopping anyway, and its events are read again; but a fault in a part
                    # must not pass unseen.
                    log.error("batch failed during a stop", exc_info=work.exception())
                raise

    async def _batch(self, batch: list[Any]) -> None:
        self.tracker.begin()
        self.facts.begin()
        rows: dict[str, tuple[Any, dict[str, Any]]] = {}
        taken: list[Any] = []
        for event in batch:
            if not self.context.current(event):
                continue  # read again by the partition's owner (streams/rewind.py)
            taken.append(event)
            self.tracker.read(event)
            seen = await self._decode(event)
            if seen is None:
                continue
            mid = seen.message_id
            row = rows[mid][1] if mid in rows else dict(self.rows.get(mid) or {})
            changed = False
            for key, part in self.parts:
                new = await part.take(seen, row.get(key))
                if new is not None:
                    row[key] = new
                    changed = True
            if changed:
                rows[mid] = (event, row)
        if not all(map(self._may_write, taken)):
            # Overtaken by a rebalance before anything went out: send nothing (see below).
            self.tracker.begin()
            self.facts.begin()
            return
        await self.facts.flush()  # a record per partition of ``metric-facts``, not per fact
        if rows:
            await self.io.durable()
        if not all(map(self._may_write, taken)):
            # A rebalance began while the batch was under way (a flush can wait seconds
            # then): its partitions may already be another worker's, which reads these events
            # again and writes these rows itself. Written from here too, late, an older row
            # could land after the new owner's and be what the next recovery reads: a
            # deadline without its dispatch owes nothing. Nothing of the batch is kept; its
            # acknowledgements are ignored (streams/rewind.py), so it is read again, and its
            # pilot facts counted again (safety first). Every event taken came from one
            # generation (the others were skipped above), so none is current once one is
            # not.
            self.tracker.begin()
            return
        for mid, (event, row) in rows.items():
            row["p"] = event.message.partition
            ends = [part.end(row[key]) for key, part in self.parts if key in row]
            row["end"] = None if None in ends else max(ends)
            with acting_for(event):
                key = sys.intern(mid)  # one copy for the table and its retention index
                self.rows[key] = row
                self.retained.note(key, row)
        await self.tracker.written()

    def _may_write(self, event: Any) -> bool:
        """Whether ``event``'s row may still be written: its partition is this worker's.
        At a stop (the flow paused, the generation unchanged) it is: the worker is still
        in the group, and leaves it only once its agents have finished, so the next owner
        recovers these rows. Not once a rebalance has completed since the event was
        fetched, at a stop or not."""
        if self.context.app.should_stop:
            return self.context.same_generation(event)
        return self.context.current(event)

    async def _decode(self, event: Any) -> Seen | None:
        """The event decoded, or None after sending it to ``dead-letter``."""
        io = self.io
        topic = io.short_topic(event.message.topic)
        if topic == SEND_OUTCOMES:
            outcome = await io.decode_outcome(event, AGENT)
            return None if outcome is None else Seen(outcome.message_id, topic, outcome, event)
        value = await io.decode(event, MODELS[topic], AGENT)
        return None if value is None else Seen(value.message_id, topic, value, event)
