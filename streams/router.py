"""Router: send request -> one routing decision on ``dispatches``.

Two hops, the Kafka way: ``intake`` validates and re-keys each request by NHS number onto
an internal topic co-partitioned with ``eligibility``, so that ``route_requests`` finds the
patient's eligibility in its local table. Practice settings are small and global.
"""

from __future__ import annotations

from typing import Any

from appfirst import telemetry
from appfirst.rules.routing import route
from appfirst.streams.app import app, clock, deadlines, table
from appfirst.streams.io import decode, encode, log
from appfirst.streams.topics import (
    dispatches,
    eligibility,
    practice_settings,
    router_by_patient,
    send_requests,
)
from appfirst.topics.models import Dispatch, Eligibility, PracticeSettings, SendRequest

# Latest eligibility per NHS number (co-partitioned with router_by_patient).
eligibility_table = table("eligibility")
# Practice settings on every worker: a handful of rows per practice.
settings_table = table("practice-settings", global_table=True)
# The decision taken per message_id, and the source offset that took it.
routed_table = table("routed")


@app.agent(send_requests)
async def intake(stream: Any) -> None:
    async for event in stream.events():
        request = await decode(event, SendRequest, "router")
        if request is None:
            continue
        await router_by_patient.send(
            key=request.patient.nhs_number.encode(), value=request.model_dump_json().encode()
        )


@app.agent(router_by_patient)
async def route_requests(stream: Any) -> None:
    async for event in stream.events():
        request = SendRequest.model_validate_json(event.message.value)
        here = [event.message.partition, event.message.offset]
        prior = routed_table.get(request.message_id)
        if prior is not None:
            stored = Dispatch.model_validate_json(prior[1])
            if list(prior[0]) != here:
                # A duplicate request: the first one's dispatch was sent (its offset was
                # committed, or it is re-processed before this one), so send nothing.
                telemetry.duplicate_requests.inc()
                log.info("duplicate send request message_id=%s", request.message_id)
                continue
            dispatch = stored  # re-processing after a crash: re-send the same decision
        else:
            practice = settings_table.get(request.ods_code)
            elig = eligibility_table.get(request.patient.nhs_number)
            dispatch = route(
                request,
                PracticeSettings.model_validate_json(practice) if practice else None,
                Eligibility.model_validate_json(elig) if elig else None,
                now=clock.now(),
                deadlines=deadlines,
            )
            routed_table[request.message_id] = [here, dispatch.model_dump_json()]
            telemetry.dispatches.labels(dispatch.channel, dispatch.reason).inc()
        await dispatches.send(key=dispatch.message_id.encode(), value=encode(dispatch))


@app.agent(eligibility)
async def track_eligibility(stream: Any) -> None:
    async for event in stream.events():
        record = await decode(event, Eligibility, "eligibility")
        if record is None:
            continue
        current = eligibility_table.get(record.nhs_number)
        if (
            current is not None
            and Eligibility.model_validate_json(current).checked_at > record.checked_at
        ):
            continue  # an older check arriving late never overrides a newer one
        eligibility_table[record.nhs_number] = record.model_dump_json()


@app.agent(practice_settings)
async def track_practice_settings(stream: Any) -> None:
    async for event in stream.events():
        record = await decode(event, PracticeSettings, "practice-settings")
        if record is None:
            continue
        settings_table[record.ods_code] = record.model_dump_json()
