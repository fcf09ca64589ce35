"""Dispatcher: sends each dispatch and each fallback through the providers, once, many at a
time, in lanes that never wait on each other.

- **Lanes.** NHS App sends and Notify sends (SMS, email) have their own queue, their own
  workers, circuit and backoff (``providers/gateway.py``): an NHS App outage holds no SMS.
  Within a lane, fallbacks go first, then individual messages, then batches
  (``rules/sending.priority``): no individual message waits behind a 45,000-patient batch.
- **An in-flight window, not Faust's concurrency.** The agent reads on, with manual
  acknowledgements, and hands each send to its lane; a record is acknowledged only once
  its send is finished and recorded in the ledger, durably. Faust commits a partition only
  up to its lowest unacknowledged record (``streams/rewind.py``), so a commit never passes
  an unfinished send, however sends finish out of order. (Faust's own agent
  ``concurrency`` acknowledges in the order events were taken and can commit past
  unfinished ones.) At most ``APPFIRST_SEND_WINDOW`` sends are held; past that the agent
  stops reading.
- **The ledger** (table ``sends``) holds every reference: ``attempt`` is written and flushed
  before each request, the outcome after it. A reference read again (a re-sent dispatch, a
  re-emitted fallback, a re-read after a crash) is absorbed; one whose attempt has no
  outcome was in flight when its worker died, and is asked of Notify by reference before
  anything is sent again (``rules/sending.next_step``); the NHS App, which cannot be asked,
  is recorded unconfirmed and never sent twice.
- **Refusals become receipts.** A rejected send, and an NHS App message given up
  (``APPFIRST_NHS_APP_GIVE_UP_SECONDS``), become failure receipts: the tracker falls back at
  once (NHS App), and the practice sees the failure (SMS, email).
- **The deadline starts at acceptance.** When the NHS App accepts a message, the dispatcher
  says so on ``send-outcomes`` before it records the send; the tracker counts the
  fallback deadline from there, so a backlog in the NHS App lane never sends the SMS
  before the app message.
- **Losing partitions.** On a rebalance or a stop, queued sends are dropped (the partition's
  next owner reads them again from the committed offset), sends in flight are finished
  and recorded before the partitions go, and no new attempt starts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from faust.types import TP

from appfirst import telemetry
from appfirst.errors import GivenUp, ProviderRejected, SendAbandoned, SentUnconfirmed
from appfirst.providers import factory
from appfirst.providers.base import Outbound
from appfirst.providers.callbacks import fallback_reference
from appfirst.providers.gateway import Gateway
from appfirst.rules import sending as rules
from appfirst.streams.app import acting_for
from appfirst.streams.io import log
from appfirst.topics.models import DeliveryReceipt, Dispatch, Fallback, ReceiptStatus

if TYPE_CHECKING:
    from appfirst.streams.context import Context


def _outbound(dispatch: Dispatch) -> Outbound | None:
    if dispatch.channel == "none" or dispatch.body is None:
        return None
    return Outbound(
        channel=dispatch.channel,
        reference=dispatch.message_id,
        message_id=dispatch.message_id,
        ods_code=dispatch.ods_code,
        body=dispatch.body,
        message_type=dispatch.message_type,
        nhs_number=dispatch.nhs_number,
        mobile=dispatch.mobile,
        email=dispatch.email,
    )


def _fallback_outbound(fb: Fallback) -> Outbound | None:
    if fb.mobile is None or fb.body is None:
        return None
    return Outbound(
        channel="sms",
        reference=fallback_reference(fb.message_id),
        message_id=fb.message_id,
        ods_code=fb.ods_code,
        body=fb.body,
        message_type=fb.message_type,
        mobile=fb.mobile,
    )


def _ids(out: Outbound) -> dict[str, str]:
    """What a log line may say of a send: its ids, never a number, address or body."""
    return {"message_id": out.message_id, "reference": out.reference}


@dataclass(eq=False)
class Item:
    """One send held by this worker, and the records it answers for."""

    event: Any
    out: Outbound
    kind: str  # dispatch | fallback
    lane: rules.Lane
    priority: int
    entered: float  # monotonic
    events: list[Any] = field(default_factory=list)  # every record to acknowledge with it
    dropped: bool = False  # its partition went: leave it to the next owner
    task: asyncio.Task[None] | None = None

    @property
    def partition(self) -> int:
        return int(self.event.message.partition)


class Lanes:
    """The queues and workers of both lanes, and the window of sends held."""

    def __init__(self, stream: Any, gateway: Gateway, dispatcher: Dispatcher) -> None:
        settings = dispatcher.settings
        self.stream = stream
        self.gateway = gateway
        self.dispatcher = dispatcher
        self.io = dispatcher.io
        self.clock = dispatcher.context.clock
        self.ledger = dispatcher.ledger
        self.drain_seconds = dispatcher.drain_seconds
        self.held: dict[str, Item] = {}  # by reference
        self.room = asyncio.Semaphore(settings.send_window)
        self.queues: dict[rules.Lane, asyncio.PriorityQueue[tuple[int, int, Item]]] = {
            "nhs_app": asyncio.PriorityQueue(),
            "notify": asyncio.PriorityQueue(),
        }
        self._order = itertools.count()
        concurrency: dict[rules.Lane, int] = {
            "nhs_app": settings.send_concurrency_nhs_app,
            "notify": settings.send_concurrency_notify,
        }
        self.workers = [
            asyncio.ensure_future(self._work(lane))
            for lane, n in concurrency.items()
            for _ in range(n)
        ]

    async def admit(self, event: Any, out: Outbound, kind: str, origin: str | None) -> None:
        held = self.held.get(out.reference)
        if held is not None and not held.dropped:
            held.events.append(event)  # the same reference again: answered by that send
            return
        await self.room.acquire()
        lane = rules.lane(out.channel)
        item = Item(event, out, kind, lane, rules.priority(kind, origin), time.monotonic())
        item.events.append(event)
        self.held[out.reference] = item
        self.queues[lane].put_nowait((item.priority, next(self._order), item))

    async def _work(self, lane: rules.Lane) -> None:
        queue = self.queues[lane]
        while True:
            _, _, item = await queue.get()
            if item.dropped:
                continue
            item.task = asyncio.current_task()
            try:
                await self._send(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Faust would never hear of it, and the send would be neither done nor
                # re-read. Crash-only: exit before the record's offset can be committed.
                log.exception(
                    "unexpected error sending reference=%s; exiting",
                    item.out.reference,
                    extra=_ids(item.out),
                )
                os._exit(70)
            finally:
                item.task = None
                self._release(item)

    def _release(self, item: Item) -> None:
        if self.held.get(item.out.reference) is item:
            del self.held[item.out.reference]
            self.room.release()

    def _write(self, item: Item, row: dict[str, Any]) -> None:
        self.dispatcher._record(item.event, item.out.reference, row)

    async def _send(self, item: Item) -> None:
        out = item.out
        row = self.ledger.get(out.reference)
        step = rules.next_step(row, item.lane)
        first = rules.first_tried(row)
        if step is rules.Next.ABSORB:
            telemetry.sends_absorbed.labels(item.kind).inc()
            await self._done(item)
            return
        if step is rules.Next.UNCONFIRMED:
            log.warning(
                "NHS App attempt of an earlier owner has no outcome; not resent reference=%s",
                out.reference,
                extra=_ids(out),
            )
            await self.dispatcher._outcome(item, "unconfirmed")
            self._write(item, {"unconfirmed": True, "attempt": first})
            telemetry.sends_absorbed.labels(item.kind).inc()  # seen again, not re-sent
            await self.io.durable()
            await self._done(item)
            return
        abandoned = lambda: item.dropped  # noqa: E731
        try:
            if step is rules.Next.LOOKUP:
                found = await self.gateway.find(out, abandoned)
                if found is not None:
                    telemetry.sends_absorbed.labels(item.kind).inc()
                    self._write(item, {"provider_id": found})
                    await self.io.durable()
                    await self._done(item)
                    return

            tried = [first]  # when it was first tried, by any owner (the give-up counts)

            async def attempting() -> None:
                if tried[0] is None:
                    tried[0] = self.clock.now().timestamp()
                self._write(item, {"attempt": tried[0]})
                await self.io.durable()  # a crash from here on must find this row

            async def refused() -> None:
                self._write(item, {"tried": tried[0]})

            provider_id = await self.gateway.send(
                out,
                first_attempt=first,
                on_attempt=attempting,
                on_refused=refused,
                abandoned=abandoned,
            )
        except SendAbandoned:
            return  # not acknowledged: the partition's next owner sends it
        except ProviderRejected as exc:
            log.error(
                "provider rejected reference=%s status=%s",
                out.reference,
                exc.status,
                extra=_ids(out),
            )
            await self.dispatcher._failure_receipt(item, given_up=False)
            self._write(item, {"rejected": exc.status})
        except GivenUp as exc:
            log.warning(
                "NHS App given up (%s): falling back to SMS reference=%s",
                exc.reason,
                out.reference,
                extra=_ids(out),
            )
            await self.dispatcher._failure_receipt(item, given_up=True)
            self._write(item, {"given_up": exc.reason})
        except SentUnconfirmed:
            log.warning(
                "send unconfirmed, not resent reference=%s",
                out.reference,
                extra=_ids(out),
            )
            await self.dispatcher._outcome(item, "unconfirmed")
            self._write(item, {"unconfirmed": True})
        else:
            await self.dispatcher._outcome(item, "accepted")
            self._write(item, {"provider_id": provider_id})
        # Written through before the record is acknowledged: a ledger row lost with the
        # process would let a re-read send it a second time.
        await self.io.durable()
        await self._done(item)

    async def _done(self, item: Item) -> None:
        for event in item.events:
            await self.stream.ack(event)

    def oldest(self) -> dict[rules.Lane, float]:
        now = time.monotonic()
        ages: dict[rules.Lane, float] = {"nhs_app": 0.0, "notify": 0.0}
        for item in self.held.values():
            ages[item.lane] = max(ages[item.lane], now - item.entered)
        return ages

    def pending(self) -> dict[rules.Lane, int]:
        counts: dict[rules.Lane, int] = {"nhs_app": 0, "notify": 0}
        for item in self.held.values():
            counts[item.lane] += 1
        return counts

    async def let_go(self, partitions: set[int] | None) -> None:
        """Drop the queued sends of ``partitions`` (None: all) and wait, for a bounded
        time, for those in flight to finish and be recorded."""
        running = []
        for item in list(self.held.values()):
            if partitions is None or item.partition in partitions:
                item.dropped = True
                if item.task is not None:
                    running.append(item.task)
                else:
                    self._release(item)
        if running:
            await asyncio.wait(running, timeout=self.drain_seconds)
        await self.io.durable()

    async def close(self) -> None:
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)


class Dispatcher:
    """The agent that sends dispatches and fallbacks through the lanes, the ledger of every
    reference sent (table ``sends``), and the lanes' gauges."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.settings = context.settings
        self.io = context.io
        self.topics = topics = context.topics
        self.ledger = context.json_rows("sends", worker_group_changelog=True)
        # Each row also holds "p", its changelog partition, and "end": a reference is
        # absorbed for APPFIRST_KEEP_SETTLED_SECONDS after its last write, then forgotten.
        self.ledger_rows = context.retention.retain(
            "sends", self.ledger, "dispatches", lambda row: (row["p"], row["end"])
        )
        self._sender: Gateway | None = None
        # How long a lost partition's sends in flight may take to finish before it goes: one
        # provider timeout, and a little for the ledger's flush.
        self.drain_seconds = self.settings.provider_timeout_seconds + 2.0
        self._lanes: Lanes | None = None
        self.dispatch: Any = context.agent(topics.dispatcher_source)(self._dispatch)
        context.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        context.app.timer(interval=1.0)(self._lane_gauges)

    def sender(self) -> Gateway:
        if self._sender is None:
            self._sender = factory.gateway(self.settings)
        return self._sender

    def _update_share(self) -> None:
        settings = self.settings
        if not settings.share_provider_limits or self._sender is None:
            return
        name = settings.topic("dispatches")
        owned = sum(1 for tp in self.context.app.assignor.assigned_actives() if tp.topic == name)
        self._sender.set_share(rules.share(owned, settings.partitions))

    async def _dispatch(self, stream: Any) -> None:
        manual = stream.noack()
        lanes = self._lanes = (
            Lanes(manual, self.sender(), self) if self.settings.providers != "off" else None
        )
        try:
            async for event in manual.events():
                if not self.context.current(event):
                    continue  # read again from the committed offset after the rebalance
                await self._take(manual, lanes, event)
        except asyncio.CancelledError:
            if lanes is not None:
                stopping = self.context.app.should_stop
                if stopping:
                    lanes.gateway.stop_new_attempts()
                # Finish what is in flight (shielded: a second cancel must not cut it off).
                drain = asyncio.ensure_future(lanes.let_go(None))
                await asyncio.wait({drain})
                await lanes.close()
                if not stopping:
                    # Restarted inside a running worker, the agent would not read the dropped
                    # records again: exit, and the partitions' next owner reads them.
                    log.critical("dispatcher cancelled outside a stop; exiting")
                    os._exit(70)
            raise

    def _record(self, event: Any, reference: str, row: dict[str, Any]) -> None:
        row = {**row, "p": event.message.partition, "end": self.context.retention.keep_until()}
        with acting_for(event):
            self.ledger[reference] = row
        self.ledger_rows.note(reference, row)

    async def _take(self, stream: Any, lanes: Lanes | None, event: Any) -> None:
        out, kind, origin = await self._outbound_of(event)
        if out is None:
            await stream.ack(event)
            return
        if lanes is None:  # APPFIRST_PROVIDERS=off: only the ledger
            if self.ledger.get(out.reference) is None:
                self._record(event, out.reference, {"provider_id": None})
            else:
                telemetry.sends_absorbed.labels(kind).inc()
            await stream.ack(event)
            return
        step = rules.next_step(self.ledger.get(out.reference), rules.lane(out.channel))
        if step is rules.Next.ABSORB:
            telemetry.sends_absorbed.labels(kind).inc()
            await stream.ack(event)
            return
        self._update_share()
        await lanes.admit(event, out, kind, origin)

    async def _outbound_of(self, event: Any) -> tuple[Outbound | None, str, str | None]:
        io = self.io
        if io.short_topic(event.message.topic) == "dispatches":
            d = await io.decode(event, Dispatch, "dispatcher")
            return (_outbound(d) if d else None), "dispatch", (d.origin if d else None)
        fb = await io.decode(event, Fallback, "dispatcher")
        out = _fallback_outbound(fb) if fb else None
        if fb is not None and out is None:
            log.error(
                "fallback without a usable mobile message_id=%s",
                fb.message_id,
                extra={"message_id": fb.message_id},
            )
            telemetry.fallbacks_undeliverable.inc()
        return out, "fallback", (fb.origin if fb else None)

    async def _outcome(self, item: Item, outcome: str) -> None:
        """Say on ``send-outcomes`` when a message's own send was accepted: the tracker
        starts an NHS App message's fallback deadline there, and the message status says
        "sent". Acknowledged by the broker before the ledger records the send, so a send
        recorded is a send they will hear of (a crash in between leaves an ``attempt``,
        recorded unconfirmed, and told, when read again). Not for fallback SMS: the patient
        has already been told in the NHS App, and the practice sees no update for the
        backup."""
        out = item.out
        if item.kind != "dispatch":
            return
        value = json.dumps(
            {"outcome": outcome, "at": self.context.clock.now().isoformat(), "channel": out.channel}
        ).encode()
        await self.io.send_acknowledged(self.topics.send_outcomes, out.message_id.encode(), value)

    async def _failure_receipt(self, item: Item, *, given_up: bool) -> None:
        """A refused send as the receipt the provider would have sent: ``rejected`` or (given
        up) ``failed`` for the NHS App, so that it falls back at once; ``technical_failure``
        for SMS and email, so that the practice sees it. Acknowledged before the ledger
        records the refusal, for the same reason as ``_outcome``."""
        out = item.out
        status: ReceiptStatus = "technical_failure"
        if out.channel == "nhs_app":
            status = "failed" if given_up else "rejected"
        receipt = DeliveryReceipt(
            message_id=out.message_id,
            channel=out.channel,
            status=status,
            occurred_at=self.context.clock.now(),
            leg="fallback" if out.reference != out.message_id else "primary",
        )
        await self.io.send_acknowledged(
            self.topics.delivery_receipts, out.message_id.encode(), self.io.encode(receipt)
        )

    async def _on_revoked(self, app: Any, revoked: set[TP], **kwargs: Any) -> None:
        if self._lanes is None:
            return
        names = {self.settings.topic("dispatches"), self.settings.topic("fallbacks")}
        await self._lanes.let_go({tp.partition for tp in revoked if tp.topic in names})

    async def _lane_gauges(self) -> None:
        if self._lanes is None:
            return
        self._update_share()
        for lane, age in self._lanes.oldest().items():
            telemetry.oldest_unsent.labels(lane).set(age)
        for lane, count in self._lanes.pending().items():
            telemetry.sends_pending.labels(lane).set(count)
