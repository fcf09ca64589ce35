"""Routing through a running worker on the embedded broker."""

from __future__ import annotations

from typing import Any

import pytest

from appfirst.topics.models import DeadLetter, Dispatch

from .factories import app_user, practice, request

pytestmark = pytest.mark.integration


def _by_id(records: list[tuple[str, Any]], topic: str = "dispatches") -> dict[str, Any]:
    return {e.message_id: e for t, e in records if t == topic}


async def test_each_channel_and_dead_letter(stack_factory: Any) -> None:
    stack = stack_factory()
    await stack.start_worker()
    await stack.publish("practice-settings", "A00001", practice("A00001"))
    await stack.publish(
        "practice-settings",
        "C00001",
        practice("C00001", nhs_app_individual=False, arm="control"),
        avro=True,
    )
    app_req = request("m-app")
    await stack.publish(
        "eligibility", app_req.patient.nhs_number, app_user(app_req.patient.nhs_number), avro=True
    )
    cases = [
        app_req,
        request("m-control", ods_code="C00001"),
        request("m-email", email_selected=True, patient={"email": "p@example.org"}),
        request("m-deceased", patient={"deceased": True}),
        request("m-unknown"),
    ]
    # Bad input first: the worker must carry on past it.
    await stack.publish("send-requests", "junk", b"\x07\x00garbage")
    bad = request("bad-nhs")
    await stack.publish(
        "send-requests",
        "bad-nhs",
        bad.model_dump_json().replace(bad.patient.nhs_number, "1234567890").encode(),
    )
    for i, req in enumerate(cases):
        await stack.publish("send-requests", req.message_id, req, avro=i % 2 == 1)

    records = await stack.read(
        ["dispatches", "dead-letter"],
        lambda rs: len(_by_id(rs)) >= len(cases) and sum(t == "dead-letter" for t, _ in rs) >= 2,
    )
    dispatches = _by_id(records)
    decided = {mid: (d.channel, d.reason) for mid, d in dispatches.items()}
    assert decided == {
        "m-app": ("nhs_app", "nhs_app_enabled"),
        "m-control": ("sms", "integration_off"),
        "m-email": ("email", "email_selected"),
        "m-deceased": ("none", "deceased"),
        "m-unknown": ("sms", "eligibility_unknown"),
    }
    app_dispatch: Dispatch = dispatches["m-app"]
    assert app_dispatch.arm == "treatment"
    assert app_dispatch.fallback_due_at is not None
    assert dispatches["m-control"].arm == "control"
    assert dispatches["m-control"].sms_fragments == 1

    dead = [e for t, e in records if t == "dead-letter"]
    assert all(isinstance(d, DeadLetter) for d in dead)
    junk = next(d for d in dead if d.key == "junk")
    assert junk.original == b"\x07\x00garbage"
    assert junk.source_topic == stack.settings.topic("send-requests")
    assert junk.offset >= 0 and junk.partition >= 0
    assert "unrecognised encoding" in junk.reason
    invalid = next(d for d in dead if d.key == "bad-nhs")
    assert "modulus-11" in invalid.reason
    assert "1234567890" not in invalid.reason  # reasons never carry the value


async def test_duplicate_request_gives_one_dispatch(stack_factory: Any) -> None:
    stack = stack_factory()
    await stack.start_worker()
    req = request("m-dup")
    for _ in range(3):
        await stack.publish("send-requests", req.message_id, req)
    await stack.publish("send-requests", "m-after", request("m-after"))
    records = await stack.read(["dispatches"], lambda rs: "m-after" in _by_id(rs))
    assert [e.message_id for _, e in records].count("m-dup") == 1
