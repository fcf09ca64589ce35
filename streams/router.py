"""Router: send request -> one routing decision on ``dispatches``.

Two hops, the Kafka way: ``intake`` validates and re-keys each request by NHS number onto
an internal topic co-partitioned with ``eligibility``, so that ``route_requests`` finds the
patient's eligibility in its local table. Practice settings are small and global.
"""

from __future__ import annotations

from typing import Any

from appfirst import telemetry
from appfirst.codecs import Decoder
from appfirst.errors import DecodeError
from appfirst.providers import factory
from appfirst.providers.eligibility import EligibilityLookup
from appfirst.rules.routing import BodyTooLongForSms, check_sms_length, choose, route
from appfirst.streams.app import (
    acting_for,
    agent,
    app,
    clock,
    current,
    deadlines,
    json_rows,
    settings,
    table,
)
from appfirst.streams.broadcast import BroadcastTable
from appfirst.streams.failed_numbers import failed_numbers_cache, failed_recently
from appfirst.streams.io import count_in, decode, durable, encode, log, reject, send
from appfirst.streams.retention import keep_until, retain
from appfirst.streams.topics import (
    dispatches,
    eligibility,
    practice_settings,
    router_by_patient,
    send_requests,
)
from appfirst.topics.catalogue import ROUTER_BY_PATIENT
from appfirst.topics.models import Dispatch, Eligibility, PracticeSettings, SendRequest

# Latest eligibility per NHS number (co-partitioned with router_by_patient).
eligibility_table = table("eligibility")


def _practice(_: str, value: bytes, current: PracticeSettings | None) -> PracticeSettings | None:
    try:
        return _settings_decoder.decode(value)
    except DecodeError:
        return None  # track_practice_settings sends it to dead-letter


_settings_decoder = Decoder(PracticeSettings)
# Practice settings on every worker: a handful of rows per practice.
practice_cache: BroadcastTable[PracticeSettings] = BroadcastTable(
    settings, settings.topic("practice-settings"), _practice
)


@app.task  # type: ignore[untyped-decorator]
async def follow_practice_settings() -> None:
    await practice_cache.run()


# message_id -> [[partition, offset] of the request that decided, dispatch JSON, end]:
# kept APPFIRST_KEEP_SETTLED_SECONDS, to absorb a request re-read or re-sent in that time.
routed_table = json_rows("routed")
routed_rows = retain("routed", routed_table, ROUTER_BY_PATIENT, lambda row: (row[0][0], row[2]))


@agent(send_requests)
async def intake(stream: Any) -> None:
    async for event in stream.events():
        request = await decode(event, SendRequest, "router")
        if request is None:
            continue
        try:
            check_sms_length(request)
        except BodyTooLongForSms as exc:
            await reject(event.message, str(exc), "router")
            continue
        await send(
            router_by_patient,
            request.patient.nhs_number.encode(),
            request.model_dump_json().encode(),
        )


@agent(router_by_patient)
async def route_requests(stream: Any) -> None:
    # Settings and known failures first: a request routed before them would use defaults.
    await practice_cache.ready.wait()
    await failed_numbers_cache.ready.wait()
    # A batch at a time: the decisions of a batch are made durable with one flush (a broker
    # round trip), not one flush per message.
    async for batch in stream.take_events(settings.route_batch, within=settings.route_within):
        await _route(batch)  # an error exits the worker (streams/app.crash_only)


async def _route(batch: list[Any]) -> None:
    out: list[Dispatch] = []
    decided = False
    for event in batch:
        if not current(event):
            # Fetched before a rebalance, or one is under way: its partition may be another
            # worker's now, and two workers deciding one request could decide differently.
            # It is read again from the committed offset by whoever owns it.
            continue
        with acting_for(event):
            dispatch, new = await _decide(event)
        if dispatch is not None:
            out.append(dispatch)
            decided = decided or new
    if decided:
        # The decisions must be durable before anyone can act on them: were a dispatch out
        # and its decision lost in a crash, a re-decision could differ (other time, new
        # eligibility) and a message could be sent both ways.
        await durable()
    for dispatch in out:
        await send(dispatches, dispatch.message_id.encode(), encode(dispatch))


async def _decide(event: Any) -> tuple[Dispatch | None, bool]:
    """The request's dispatch (None for a duplicate or a bad record) and whether it was
    decided just now."""
    try:
        # Written by intake, validated there; anything else on the topic is dead-lettered
        # rather than failing the agent on every restart.
        request = SendRequest.model_validate_json(event.message.value or b"")
    except ValueError as exc:
        await reject(event.message, f"not a send request: {type(exc).__name__}", "router")
        return None, False
    count_in(event)
    here = [event.message.partition, event.message.offset]
    prior = routed_table.get(request.message_id)
    if prior is not None:
        if list(prior[0]) != here:
            # A duplicate request: the first one's dispatch was sent (its offset was
            # committed, or it is re-processed before this one), so send nothing.
            telemetry.duplicate_requests.inc()
            log.info(
                "duplicate send request message_id=%s",
                request.message_id,
                extra={"message_id": request.message_id},
            )
            return None, False
        # Re-processing after a crash: re-send the same decision.
        return Dispatch.model_validate_json(prior[1]), False
    dispatch = route(
        request,
        practice_cache.get(request.ods_code),
        await _eligibility(request),
        now=clock.now(),
        deadlines=deadlines,
        failed_recently=failed_recently,
    )
    row = [here, dispatch.model_dump_json(), keep_until()]
    routed_table[request.message_id] = row
    routed_rows.note(request.message_id, row)
    telemetry.dispatches.labels(dispatch.channel, dispatch.reason).inc()
    return dispatch, True


async def _eligibility(request: SendRequest) -> Eligibility | None:
    """The table's record, else a bounded on-demand lookup (cached), else None."""
    nhs = request.patient.nhs_number
    cached = eligibility_table.get(nhs)
    if cached is not None:
        return Eligibility.model_validate_json(cached)
    if settings.providers == "off" or not _needs_eligibility(request):
        return None
    found = await eligibility_lookup().lookup(nhs, request.ods_code)
    telemetry.eligibility_lookups.labels("found" if found else "unknown").inc()
    if found is not None:
        eligibility_table[nhs] = found.model_dump_json()
        await send(eligibility, nhs.encode(), encode(found))
    return found


def _needs_eligibility(request: SendRequest) -> bool:
    """Only rule 7 reads eligibility: skip the lookup when an earlier rule decides."""
    blank = PracticeSettings(ods_code=request.ods_code, nhs_app_individual=True)
    return choose(request, blank, None) == ("sms", "eligibility_unknown")


_lookup: EligibilityLookup | None = None


def eligibility_lookup() -> EligibilityLookup:
    global _lookup
    if _lookup is None:
        _lookup = factory.eligibility_lookup(settings)
    return _lookup


@agent(eligibility)
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


@agent(practice_settings)
async def track_practice_settings(stream: Any) -> None:
    async for event in stream.events():
        # Only validation here: every worker reads the topic whole into practice_cache.
        await decode(event, PracticeSettings, "practice-settings")
