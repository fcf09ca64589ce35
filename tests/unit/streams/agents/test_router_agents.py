"""``streams/router``: ``intake`` validates and re-keys each send request by patient;
``route_requests`` decides each once, makes the decision durable and dispatches it; the
eligibility agent keeps the newest check. Routing rules themselves: ``tests/unit/rules``."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from appfirst.streams import io
from appfirst.streams.router import Router
from appfirst.topics.models import Dispatch, SendRequest
from tests.integration.factories import app_user, practice, request
from tests.unit.streams.agents.conftest import Build
from tests.unit.streams.agents.driver import feed, until


def _json(event: Any) -> bytes:
    return event.model_dump_json().encode()


def _dispatched(outbox: io.Outbox) -> list[Dispatch]:
    return [Dispatch.model_validate_json(v) for _, v in outbox.on("dispatches")]


def _router(build: Build) -> Router:
    router: Router = build("router").parts["router"]
    return router


def _loaded(build: Build, *practices: Any) -> Router:
    """A router whose broadcast caches, the ones it waits for, are loaded."""
    router = _router(build)
    for p in practices:
        router.practice_cache._record(p.ods_code.encode(), _json(p))  # as read from its topic
    router.practice_cache.ready.set()
    router.failed.failed_numbers_cache.ready.set()
    return router


async def test_intake_rekeys_a_request_by_patient(outbox: io.Outbox, build: Build) -> None:
    router = _router(build)
    r = request("r-1")
    async with router.intake.test_context() as agent:
        await feed(agent, "send-requests", b"r-1", _json(r))
        rekeyed = await until(lambda: outbox.on("router-by-patient"))
    key, value = rekeyed[0]
    assert key == r.patient.nhs_number.encode()
    assert SendRequest.model_validate_json(value) == r


async def test_intake_dead_letters_what_no_sms_can_carry(outbox: io.Outbox, build: Build) -> None:
    router = _router(build)
    async with router.intake.test_context() as agent:
        await feed(agent, "send-requests", b"r-2", _json(request("r-2", body="x" * 919)))
        await feed(agent, "send-requests", b"r-3", b"\x07junk")
        dead = await until(lambda: len(outbox.on("dead-letter")) == 2 and outbox.on("dead-letter"))
    reasons = [json.loads(v)["reason"] for _, v in dead]
    assert "too long for SMS" in reasons[0]
    assert "unrecognised encoding" in reasons[1]
    assert not outbox.on("router-by-patient")


async def test_an_app_user_at_an_app_practice_is_sent_to_the_app(
    outbox: io.Outbox, build: Build
) -> None:
    router = _loaded(build, practice("R00001"))
    r = request("r-4", ods_code="R00001")
    with router.context.acting_for_partition("eligibility", 0):
        router.eligibility_table[r.patient.nhs_number] = app_user(
            r.patient.nhs_number
        ).model_dump_json()
    async with router.route_requests.test_context() as agent:
        await feed(agent, "router-by-patient", r.patient.nhs_number.encode(), _json(r))
        dispatched = await until(lambda: _dispatched(outbox))
    assert [(d.message_id, d.channel, d.reason) for d in dispatched] == [
        ("r-4", "nhs_app", "nhs_app_enabled")
    ]
    assert dispatched[0].fallback_due_at is not None
    assert router.routed_table.get("r-4") is not None  # the decision, kept


async def test_a_request_sent_again_is_dispatched_once(outbox: io.Outbox, build: Build) -> None:
    router = _loaded(build, practice("R00002", nhs_app_individual=False))
    r = request("r-5", ods_code="R00002")
    later = r.model_copy(update={"requested_at": r.requested_at + timedelta(minutes=5)})
    after = request("r-6", ods_code="R00002")
    async with router.route_requests.test_context() as agent:
        for event in (r, later, after):  # three records: the first two one message
            await feed(agent, "router-by-patient", event.patient.nhs_number.encode(), _json(event))
        await until(lambda: "r-6" in {d.message_id for d in _dispatched(outbox)})
    assert [d.message_id for d in _dispatched(outbox)] == ["r-5", "r-6"]
    assert {d.channel for d in _dispatched(outbox)} == {"sms"}


async def test_a_request_read_again_gets_the_same_decision(outbox: io.Outbox, build: Build) -> None:
    # After a crash, the same record (same partition and offset) is read again: its
    # decision is re-sent as it was, not made again (eligibility may have changed since).
    router = _loaded(build, practice("R00003"))
    r = request("r-7", ods_code="R00003")
    async with router.route_requests.test_context() as agent:
        await feed(agent, "router-by-patient", r.patient.nhs_number.encode(), _json(r))
        first = await until(lambda: _dispatched(outbox))
        with router.context.acting_for_partition("eligibility", 0):
            router.eligibility_table[r.patient.nhs_number] = app_user(
                r.patient.nhs_number
            ).model_dump_json()
        agent.sent_offset -= 1  # the same offset again
        await feed(agent, "router-by-patient", r.patient.nhs_number.encode(), _json(r))
        both = await until(lambda: len(_dispatched(outbox)) == 2 and _dispatched(outbox))
    assert both[0] == both[1] == first[0]
    assert first[0].channel == "sms"  # no eligibility when first decided


async def test_an_older_eligibility_check_never_replaces_a_newer(
    outbox: io.Outbox, build: Build
) -> None:
    router = _router(build)
    newer = app_user("9434765919")
    older = app_user(
        "9434765919", has_nhs_app=False, checked_at=newer.checked_at - timedelta(days=1)
    )
    async with router.track_eligibility.test_context() as agent:
        await feed(agent, "eligibility", b"9434765919", _json(newer))
        await feed(agent, "eligibility", b"9434765919", _json(older))
        await feed(agent, "eligibility", b"x", b"{}")  # read after them: dead-lettered
        await until(lambda: outbox.on("dead-letter"))
    kept = router.eligibility_table.get("9434765919")
    assert kept is not None and json.loads(kept)["has_nhs_app"] is True


async def test_practice_settings_that_do_not_validate_are_dead_lettered(
    outbox: io.Outbox, build: Build
) -> None:
    router = _router(build)
    async with router.track_practice_settings.test_context() as agent:
        await feed(agent, "practice-settings", b"P00001", _json(practice("P00001")))
        await feed(agent, "practice-settings", b"P00002", b'{"ods_code": "P00002", "arm": 7}')
        dead = await until(lambda: outbox.on("dead-letter"))
    assert len(dead) == 1 and dead[0][0] == b"P00002"
    assert json.loads(dead[0][1])["agent"] == "practice-settings"
