"""Router: send request -> one routing decision on ``dispatches``.

Two hops, the Kafka way: ``intake`` validates and re-keys each request by NHS number onto
an internal topic co-partitioned with ``eligibility``, so that ``route_requests`` finds the
patient's eligibility in its local table. Practice settings are small and global.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from appfirst import telemetry
from appfirst.codecs import Decoder
from appfirst.errors import DecodeError
from appfirst.providers import factory
from appfirst.providers.eligibility import EligibilityLookup
from appfirst.rules.routing import BodyTooLongForSms, check_sms_length, choose, route
from appfirst.streams.app import acting_for
from appfirst.streams.broadcast import BroadcastTable
from appfirst.streams.io import log
from appfirst.topics.catalogue import ROUTER_BY_PATIENT
from appfirst.topics.models import Dispatch, Eligibility, PracticeSettings, SendRequest

if TYPE_CHECKING:
    from appfirst.streams.context import Context
    from appfirst.streams.failed_numbers import FailedNumbers


def _practice(_: str, value: bytes, current: PracticeSettings | None) -> PracticeSettings | None:
    try:
        return _settings_decoder.decode(value)
    except DecodeError:
        return None  # track_practice_settings sends it to dead-letter


_settings_decoder = Decoder(PracticeSettings)


class Router:
    """Validates, re-keys and routes each send request once, onto ``dispatches``."""

    def __init__(self, context: Context, failed: FailedNumbers) -> None:
        self.context = context
        self.settings = context.settings
        self.io = context.io
        self.failed = failed
        topics = context.topics
        self.topics = topics
        # Latest eligibility per NHS number (co-partitioned with router_by_patient).
        self.eligibility_table = context.table("eligibility")
        # Practice settings on every worker: a handful of rows per practice.
        self.practice_cache: BroadcastTable[PracticeSettings] = context.broadcast(
            "practice-settings", _practice, before_ready=True
        )
        # message_id -> [[partition, offset] of the request that decided, dispatch JSON, end]:
        # kept APPFIRST_KEEP_SETTLED_SECONDS, to absorb a request re-read or re-sent in that
        # time.
        self.routed_table = context.json_rows("routed")
        self.routed_rows = context.retention.retain(
            "routed", self.routed_table, ROUTER_BY_PATIENT, lambda row: (row[0][0], row[2])
        )
        self._lookup: EligibilityLookup | None = None
        self.intake: Any = context.agent(topics.send_requests)(self._intake)
        self.route_requests: Any = context.agent(topics.router_by_patient)(self._route_requests)
        self.track_eligibility: Any = context.agent(topics.eligibility)(self._track_eligibility)
        self.track_practice_settings: Any = context.agent(topics.practice_settings)(
            self._track_practice_settings
        )

    async def _intake(self, stream: Any) -> None:
        async for event in stream.events():
            request = await self.io.decode(event, SendRequest, "router")
            if request is None:
                continue
            try:
                check_sms_length(request)
            except BodyTooLongForSms as exc:
                await self.io.reject(event.message, str(exc), "router")
                continue
            await self.io.send(
                self.topics.router_by_patient,
                request.patient.nhs_number.encode(),
                request.model_dump_json().encode(),
            )

    async def _route_requests(self, stream: Any) -> None:
        # Settings and known failures first: a request routed before them would use defaults.
        await self.practice_cache.ready.wait()
        await self.failed.failed_numbers_cache.ready.wait()
        # A batch at a time: the decisions of a batch are made durable with one flush (a
        # broker round trip), not one flush per message.
        async for batch in stream.take_events(
            self.settings.route_batch, within=self.settings.route_within
        ):
            await self._route(batch)  # an error exits the worker (streams/app.crash_only)

    async def _route(self, batch: list[Any]) -> None:
        out: list[Dispatch] = []
        decided = False
        for event in batch:
            if not self.context.current(event):
                # Fetched before a rebalance, or one is under way: its partition may be
                # another worker's now, and two workers deciding one request could decide
                # differently. It is read again from the committed offset by whoever owns it.
                continue
            with acting_for(event):
                dispatch, new = await self._decide(event)
            if dispatch is not None:
                out.append(dispatch)
                decided = decided or new
        if decided:
            # The decisions must be durable before anyone can act on them: were a dispatch
            # out and its decision lost in a crash, a re-decision could differ (other time,
            # new eligibility) and a message could be sent both ways.
            await self.io.durable()
        for dispatch in out:
            await self.io.send(
                self.topics.dispatches, dispatch.message_id.encode(), self.io.encode(dispatch)
            )

    async def _decide(self, event: Any) -> tuple[Dispatch | None, bool]:
        """The request's dispatch (None for a duplicate or a bad record) and whether it was
        decided just now."""
        try:
            # Written by intake, validated there; anything else on the topic is dead-lettered
            # rather than failing the agent on every restart.
            request = SendRequest.model_validate_json(event.message.value or b"")
        except ValueError as exc:
            await self.io.reject(
                event.message, f"not a send request: {type(exc).__name__}", "router"
            )
            return None, False
        self.io.count_in(event)
        here = [event.message.partition, event.message.offset]
        prior = self.routed_table.get(request.message_id)
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
            self.practice_cache.get(request.ods_code),
            await self._eligibility(request),
            now=self.context.clock.now(),
            deadlines=self.context.deadlines,
            failed_recently=self.failed.failed_recently,
        )
        row = [here, dispatch.model_dump_json(), self.context.retention.keep_until()]
        self.routed_table[request.message_id] = row
        self.routed_rows.note(request.message_id, row)
        telemetry.dispatches.labels(dispatch.channel, dispatch.reason).inc()
        return dispatch, True

    async def _eligibility(self, request: SendRequest) -> Eligibility | None:
        """The table's record, else a bounded on-demand lookup (cached), else None."""
        nhs = request.patient.nhs_number
        cached = self.eligibility_table.get(nhs)
        if cached is not None:
            return Eligibility.model_validate_json(cached)
        if self.settings.providers == "off" or not _needs_eligibility(request):
            return None
        found = await self.eligibility_lookup().lookup(nhs, request.ods_code)
        telemetry.eligibility_lookups.labels("found" if found else "unknown").inc()
        if found is not None:
            self.eligibility_table[nhs] = found.model_dump_json()
            await self.io.send(self.topics.eligibility, nhs.encode(), self.io.encode(found))
        return found

    def eligibility_lookup(self) -> EligibilityLookup:
        if self._lookup is None:
            self._lookup = factory.eligibility_lookup(self.settings)
        return self._lookup

    async def _track_eligibility(self, stream: Any) -> None:
        async for event in stream.events():
            record = await self.io.decode(event, Eligibility, "eligibility")
            if record is None:
                continue
            current = self.eligibility_table.get(record.nhs_number)
            if (
                current is not None
                and Eligibility.model_validate_json(current).checked_at > record.checked_at
            ):
                continue  # an older check arriving late never overrides a newer one
            self.eligibility_table[record.nhs_number] = record.model_dump_json()

    async def _track_practice_settings(self, stream: Any) -> None:
        async for event in stream.events():
            # Only validation here: every worker reads the topic whole into practice_cache.
            await self.io.decode(event, PracticeSettings, "practice-settings")


def _needs_eligibility(request: SendRequest) -> bool:
    """Only rule 7 reads eligibility: skip the lookup when an earlier rule decides."""
    blank = PracticeSettings(ods_code=request.ods_code, nhs_app_individual=True)
    return choose(request, blank, None) == ("sms", "eligibility_unknown")
