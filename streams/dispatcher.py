"""Dispatcher: sends each dispatch and each fallback through the providers, once.

The ledger table remembers every reference sent. A dispatch or fallback seen again (the
router re-sent after a crash, the sweep re-emitted) is absorbed and counted, never re-sent.
A provider that refuses a message is turned into a failure receipt, so that the tracker
falls back (NHS App) and the practice sees the failure (SMS, email).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from appfirst import telemetry
from appfirst.errors import ProviderRejected, SendAbandoned, SentUnconfirmed
from appfirst.providers import factory
from appfirst.providers.base import Outbound, Sender
from appfirst.providers.callbacks import fallback_reference
from appfirst.streams.app import app, clock, settings, table
from appfirst.streams.io import decode, durable, encode, log, send, short_topic
from appfirst.streams.topics import delivery_receipts, dispatcher_source
from appfirst.topics.models import DeliveryReceipt, Dispatch, Fallback

ledger = table("sends", worker_group_changelog=True)
_sender: Sender | None = None


def sender() -> Sender:
    global _sender
    if _sender is None:
        _sender = factory.gateway(settings)
    return _sender


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


@app.agent(dispatcher_source)
async def dispatch(stream: Any) -> None:
    async for event in stream.events():
        out, kind = await _outbound_of(event)
        if out is None:
            continue
        # A stop cancels the agent mid-event. A send cut off there may have reached the
        # provider with no ledger row to show for it, and the record, read again by the
        # partition's next owner, would be sent twice. So the send under way is finished
        # first (its answer awaited, its ledger row written through), then the stop goes on.
        # No new attempt starts: one waiting out a backoff or an open circuit gives up, with
        # nothing in flight, and the partition's next owner sends it.
        under_way = asyncio.ensure_future(_send_once(out, kind))
        try:
            await asyncio.shield(under_way)
        except asyncio.CancelledError:
            # Only when the worker is stopping: the flag is never lifted, and an agent
            # restarted in a running worker must go on sending.
            if _sender is not None and app.should_stop:
                _sender.stop_new_attempts()
            await asyncio.wait({under_way})
            if not under_way.cancelled() and under_way.exception() is not None:
                log.error("send under way at the stop failed", exc_info=under_way.exception())
            raise


async def _outbound_of(event: Any) -> tuple[Outbound | None, str]:
    if short_topic(event.message.topic) == "dispatches":
        d = await decode(event, Dispatch, "dispatcher")
        out, kind = (_outbound(d) if d else None), "dispatch"
    else:
        fb = await decode(event, Fallback, "dispatcher")
        out, kind = (_fallback_outbound(fb) if fb else None), "fallback"
        if fb is not None and out is None:
            log.error(
                "fallback without a usable mobile message_id=%s",
                fb.message_id,
                extra={"message_id": fb.message_id},
            )
            telemetry.fallbacks_undeliverable.inc()
    return out, kind


async def _send_once(out: Outbound, kind: str) -> None:
    if ledger.get(out.reference) is not None:
        telemetry.sends_absorbed.labels(kind).inc()
        return
    if settings.providers == "off":
        ledger[out.reference] = {"provider_id": None}
        return
    try:
        provider_id = await sender().send(out)
    except ProviderRejected as exc:
        log.error(
            "provider rejected reference=%s status=%s",
            out.reference,
            exc.status,
            extra={"message_id": out.message_id, "reference": out.reference},
        )
        ledger[out.reference] = {"rejected": exc.status}
        await _failure_receipt(out)
        return
    except SendAbandoned:
        return  # stopping: not in the ledger, so whoever reads it next sends it
    except SentUnconfirmed:
        log.warning(
            "send unconfirmed, not resent reference=%s",
            out.reference,
            extra={"message_id": out.message_id, "reference": out.reference},
        )
        ledger[out.reference] = {"unconfirmed": True}
        await durable()  # as below: an unconfirmed send must never be sent again
        return
    except Exception:
        # Faust would count the event as processed; a message must never be dropped.
        # Crash-only: exit before the offset is committed; it is re-read on restart.
        log.exception(
            "unexpected error sending reference=%s; exiting",
            out.reference,
            extra={"message_id": out.message_id, "reference": out.reference},
        )
        os._exit(70)
    ledger[out.reference] = {"provider_id": provider_id}
    # Written through at once: a ledger row lost with the process (a stop, a crash)
    # would let a re-read of this dispatch, by a restarted worker or a new dispatcher
    # group after a role switch, send it a second time. Sends are paced by the
    # providers' limits (tens a second), so a flush per send costs nothing that shows.
    await durable()


async def _failure_receipt(out: Outbound) -> None:
    receipt = DeliveryReceipt(
        message_id=out.message_id,
        channel=out.channel,
        status="rejected" if out.channel == "nhs_app" else "technical_failure",
        occurred_at=clock.now(),
        leg="fallback" if out.reference != out.message_id else "primary",
    )
    await send(delivery_receipts, out.message_id.encode(), encode(receipt))
