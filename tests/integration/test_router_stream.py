"""Routing through a running worker on the embedded broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from appfirst.processes import kill
from appfirst.providers.scenario import Scenario
from appfirst.topics.models import DeadLetter, DeliveryReceipt, Dispatch, Eligibility, Reason

from .factories import app_user, now, practice, request

pytestmark = pytest.mark.integration


def _by_id(records: list[tuple[str, Any]], topic: str = "dispatches") -> dict[str, Any]:
    return {e.message_id: e for t, e in records if t == topic}


def _dead(records: list[tuple[str, Any]]) -> list[DeadLetter]:
    return [e for t, e in records if t == "dead-letter"]


async def test_every_reason_through_the_worker(stack_factory: Any) -> None:
    stack = stack_factory()
    # Settings first: a worker is ready only once it has read them whole; published after
    # it started, they race the requests (no order between two topics).
    await stack.publish("practice-settings", "APP01", practice("APP01"))
    await stack.publish(
        "practice-settings",
        "OFF01",
        practice("OFF01", nhs_app_individual=False, arm="control"),
        avro=True,
    )
    await stack.publish(
        "practice-settings",
        "LTF01",
        practice("LTF01", nhs_app_individual=False, arm=None, likely_to_fail_check=True),
    )
    await stack.start_worker()

    def with_eligibility(mid: str, **elig: Any) -> tuple[Any, Eligibility]:
        req = request(mid, ods_code="APP01")
        return req, app_user(req.patient.nhs_number, **elig)

    cases: dict[Reason, Any] = {
        "deceased": request("r-deceased", patient={"deceased": True, "email": "a@b.org"}),
        "email_in_list": request(
            "r-email-list",
            origin="batch",
            batch_id="b1",
            message_type="questionnaire",
            patient={"email": "a@b.org"},
        ),
        "email_selected": request("r-email-sel", email_selected=True, patient={"email": "a@b.org"}),
        "sms_only_type": request("r-sms-only", message_type="two_factor"),
        "number_overridden": request("r-overridden", number_overridden=True),
        "not_gp": request("r-not-gp", organisation_type="other"),
        "not_england": request("r-wales", nation="wales"),
        "integration_off": request("r-off", ods_code="OFF01"),
        "eligibility_unknown": request("r-unknown", ods_code="APP01"),
        "contact_details_missing": request(
            "r-no-mobile", message_type="confirmation", patient={"mobile": None}
        ),
        "not_uk_mobile": request(
            "r-landline", message_type="confirmation", patient={"mobile": "020 7946 0000"}
        ),
    }
    eligibility_cases = {
        "nhs_app_enabled": with_eligibility("r-app"),
        "no_nhs_app": with_eligibility("r-no-app", has_nhs_app=False, notifications_enabled=False),
        "notifications_off": with_eligibility("r-notif-off", notifications_enabled=False),
        "proxy_only": with_eligibility("r-proxy", proxy_only=True),
    }
    for _, elig in eligibility_cases.values():
        await stack.publish("eligibility", elig.nhs_number, elig, avro=True)
    await stack.absorbed("eligibility", {e.nhs_number for _, e in eligibility_cases.values()})
    for i, req in enumerate([*cases.values(), *(r for r, _ in eligibility_cases.values())]):
        await stack.publish("send-requests", req.message_id, req, avro=i % 2 == 0)

    # likely_to_fail: a failed SMS to a number makes the next message to it uncontactable.
    first = request("r-ltf-1", ods_code="LTF01", patient={"mobile": "07700 123456"})
    await stack.publish("send-requests", first.message_id, first)
    await stack.read(["dispatches"], lambda rs: "r-ltf-1" in _by_id(rs))
    await stack.publish(
        "delivery-receipts",
        "r-ltf-1",
        DeliveryReceipt(
            message_id="r-ltf-1", channel="sms", status="permanent_failure", occurred_at=now()
        ),
    )
    await asyncio.sleep(3)  # the failure travels through failed-numbers to the global table
    second = request("r-ltf-2", ods_code="LTF01", patient={"mobile": "+44 7700 123456"})
    await stack.publish("send-requests", second.message_id, second)

    expected = {req.message_id: reason for reason, req in cases.items()}
    expected |= {req.message_id: reason for reason, (req, _) in eligibility_cases.items()}
    expected |= {"r-ltf-1": "integration_off", "r-ltf-2": "likely_to_fail"}
    records = await stack.read(
        ["dispatches"], lambda rs: set(expected) <= set(_by_id(rs)), timeout=40
    )
    got = {mid: d.reason for mid, d in _by_id(records).items()}
    assert got == expected
    assert set(expected.values()) == set(Reason.__args__)  # type: ignore[attr-defined]


async def test_bad_input_goes_to_dead_letter_and_the_worker_carries_on(stack_factory: Any) -> None:
    stack = stack_factory()
    await stack.start_worker()
    bad = request("bad-nhs")
    too_long = request("too-long", body="x" * 919)
    await stack.publish("send-requests", "junk", b"\x07\x00garbage")
    await stack.publish(
        "send-requests",
        "bad-nhs",
        bad.model_dump_json().replace(bad.patient.nhs_number, "1234567890").encode(),
    )
    await stack.publish("send-requests", "too-long", too_long)
    await stack.publish("eligibility", "x", b'{"nhs_number": "123"}')
    await stack.publish("send-requests", "after", request("after"))

    records = await stack.read(
        ["dispatches", "dead-letter"],
        lambda rs: "after" in _by_id(rs) and len(_dead(rs)) >= 4,
    )
    dead = {d.key: d for d in _dead(records)}
    assert set(_by_id(records)) == {"after"}
    junk = dead["junk"]
    assert junk.original == b"\x07\x00garbage"
    assert junk.source_topic == stack.settings.topic("send-requests")
    assert junk.offset >= 0 and junk.partition >= 0 and junk.agent == "router"
    assert "unrecognised encoding" in junk.reason
    assert "modulus-11" in dead["bad-nhs"].reason
    assert "1234567890" not in dead["bad-nhs"].reason  # reasons never carry the value
    assert "too long for SMS" in dead["too-long"].reason
    assert dead["x"].source_topic == stack.settings.topic("eligibility")


async def test_duplicate_request_gives_one_dispatch(stack_factory: Any) -> None:
    stack = stack_factory()
    await stack.start_worker()
    req = request("m-dup")
    for _ in range(3):
        await stack.publish("send-requests", req.message_id, req)
    await stack.publish("send-requests", "m-after", request("m-after"))
    both = {"m-dup", "m-after"}
    # Routed in one batch, the two dispatches go to different partitions: either may be
    # read first. Once both are out, a wrong second m-dup would follow within the batch.
    await stack.read(["dispatches"], lambda rs: both <= set(_by_id(rs)))
    await asyncio.sleep(2)
    records = await stack.read(["dispatches"], lambda rs: both <= set(_by_id(rs)))
    assert [e.message_id for _, e in records].count("m-dup") == 1


async def test_a_crash_mid_stream_changes_no_decision(stack_factory: Any) -> None:
    stack = stack_factory()
    worker, _ = await stack.start_worker()
    await stack.publish("practice-settings", "APP01", practice("APP01"))
    total = 400
    for i in range(total):
        req = request(f"c-{i:04d}", ods_code="APP01")
        if i % 3 == 0:
            await stack.publish(
                "eligibility", req.patient.nhs_number, app_user(req.patient.nhs_number)
            )
        await stack.publish("send-requests", req.message_id, req)
    await stack.read(["dispatches"], lambda rs: len(rs) >= total // 4)
    kill(worker)
    for i in range(0, total, 7):  # upstream re-sends some while the worker is down
        await stack.publish("send-requests", f"c-{i:04d}", request(f"c-{i:04d}", ods_code="APP01"))
    await stack.start_worker()
    records = await stack.read(["dispatches"], lambda rs: len(_by_id(rs)) >= total, timeout=90)
    decisions: dict[str, set[tuple[str, str, Any]]] = {}
    for _, d in records:
        assert isinstance(d, Dispatch)
        decisions.setdefault(d.message_id, set()).add((d.channel, d.reason, d.dispatched_at))
    assert len(decisions) == total
    changed = {mid: ds for mid, ds in decisions.items() if len(ds) > 1}
    assert not changed, "a message was decided twice, differently"


async def test_a_cache_miss_asks_the_nhs_app_and_remembers(stack_factory: Any) -> None:
    # What the lookup finds, not how fast: the first one (a token, then the report's pages)
    # took over the 0.25 s default bound twice in CI's full run on this shared machine.
    stack = stack_factory(APPFIRST_PROVIDERS="simulator", APPFIRST_ELIGIBILITY_TIMEOUT_SECONDS="5")
    await stack.start_simulator(app_share=1.0, notifications_share=1.0, read_share=1.0)
    await stack.publish("practice-settings", "APP01", practice("APP01"))
    await stack.start_worker()
    # Registered at APP01 in the simulator's scenario (seed 7): in its patients report.
    registered = Scenario().roster("APP01")[0]
    req = request("miss-1", ods_code="APP01", patient={"nhs_number": registered})
    stranger = request("miss-2", ods_code="APP01")  # not registered there: not in the report
    await stack.publish("send-requests", req.message_id, req)
    await stack.publish("send-requests", stranger.message_id, stranger)
    records = await stack.read(
        ["dispatches", "eligibility"],
        lambda rs: (
            {"miss-1", "miss-2"} <= set(_by_id(rs)) and sum(t == "eligibility" for t, _ in rs) >= 2
        ),
    )
    assert _by_id(records)["miss-1"].reason == "nhs_app_enabled"
    assert _by_id(records)["miss-2"].reason == "no_nhs_app"
    learned = {e.nhs_number: e for t, e in records if t == "eligibility"}
    assert learned[registered].has_nhs_app
    assert not learned[stranger.patient.nhs_number].has_nhs_app
    scenario = Scenario(app_share=1.0)  # as the simulator was started
    users = sum(scenario.app_user(n) is not None for n in scenario.roster("APP01"))
    pages = -(-users // scenario.report_page_size)
    assert (await stack.sends())["lookups"] == pages  # one practice report for both misses


async def test_a_record_too_big_to_dead_letter_whole_is_dead_lettered_cut(
    stack_factory: Any,
) -> None:
    # 900 kB of junk: the broker takes it (its limit is 1 MiB), but a dead-letter record
    # carrying it whole, with its envelope, would not fit in one produce request.
    stack = stack_factory()
    await stack.start_worker()
    junk = b"\x07" + bytes(range(256)) * 3500
    await stack.publish("send-requests", "huge", junk)
    await stack.publish("send-requests", "after-huge", request("after-huge"))
    records = await stack.read(
        ["dispatches", "dead-letter"],
        lambda rs: "after-huge" in _by_id(rs) and "huge" in {d.key for d in _dead(rs)},
        timeout=60,
    )
    dead = {d.key: d for d in _dead(records)}["huge"]
    assert junk.startswith(dead.original)
    assert f"original cut to {len(dead.original):,} of {len(junk):,} bytes" in dead.reason
    assert stack.self_exits == 0
