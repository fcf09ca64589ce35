"""A straightforward Faust implementation of appfirst's routing, for the routing-only
comparison: the same rules (``rules/routing.route``), the same two hops (re-keyed by NHS
number onto a topic co-partitioned with eligibility), but no durable decision, no
de-duplication, no dead-letter and no batching: what a first Faust version would be.

Practice settings in a Faust ``GlobalTable``, eligibility in a Faust ``Table``. Run as
``python -m bench.plain_router``; it reads the broker and prefix from the worker's settings
and commits as group ``<prefix>plain``.
"""

from __future__ import annotations

from typing import Any

from appfirst.clock import WallClock
from appfirst.codecs import Decoder
from appfirst.codecs.json_codec import JsonCodec
from appfirst.rules.routing import BodyTooLongForSms, check_sms_length, route
from appfirst.settings import get_settings
from appfirst.topics.catalogue import ROUTER_BY_PATIENT
from appfirst.topics.models import Dispatch, Eligibility, PracticeSettings, SendRequest

from .plain_app import plain_app, run

settings = get_settings()
deadlines = settings.deadlines()
clock = WallClock()
app = plain_app(settings, "plain")


def _topic(name: str) -> Any:
    return app.topic(settings.topic(name), key_type=bytes, value_type=bytes)


requests = _topic("send-requests")
by_patient = _topic(ROUTER_BY_PATIENT)
dispatches = _topic("dispatches")
practice_topic = _topic("practice-settings")
eligibility_topic = _topic("eligibility")

practices = app.GlobalTable("plain-practices", default=None, value_type=bytes)
eligibility = app.Table("plain-eligibility", default=None, value_type=bytes)

request_decoder = Decoder(SendRequest)
practice_decoder = Decoder(PracticeSettings)
eligibility_decoder = Decoder(Eligibility)
dispatch_codec = JsonCodec(Dispatch)


@app.agent(practice_topic)
async def keep_practices(stream: Any) -> None:
    async for event in stream.events():
        practices[event.message.key.decode()] = event.message.value


@app.agent(eligibility_topic)
async def keep_eligibility(stream: Any) -> None:
    async for event in stream.events():
        eligibility[event.message.key.decode()] = event.message.value


@app.agent(requests)
async def intake(stream: Any) -> None:
    async for value in stream:
        request = request_decoder.decode(value)
        try:
            check_sms_length(request)
        except BodyTooLongForSms:
            continue
        await by_patient.send(key=request.patient.nhs_number.encode(), value=value)


@app.agent(by_patient)
async def route_requests(stream: Any) -> None:
    async for value in stream:
        request = request_decoder.decode(value)
        practice = practices.get(request.ods_code)
        known = eligibility.get(request.patient.nhs_number)
        dispatch = route(
            request,
            practice_decoder.decode(practice) if practice else None,
            eligibility_decoder.decode(known) if known else None,
            now=clock.now(),
            deadlines=deadlines,
        )
        await dispatches.send(
            key=dispatch.message_id.encode(), value=dispatch_codec.encode(dispatch)
        )


if __name__ == "__main__":
    run(app)
