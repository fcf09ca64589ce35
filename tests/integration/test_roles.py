"""APPFIRST_ROLE: the dispatcher in a process of its own, and switching layouts safely.

A deployment that moves from one kind of worker (role ``all``) to stream workers plus a
dispatcher (roles ``streams`` and ``dispatcher``) starts a new consumer group for the
dispatcher, which re-reads every dispatch. Its ledger of sends is the same changelog in
both layouts, so what was sent before the switch is absorbed, never sent again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import loopback

from .factories import app_user, practice, request

pytestmark = pytest.mark.integration

BATCH = 30


async def _publish(stack: Any, prefix: str) -> set[str]:
    reqs = [request(f"{prefix}-{i:03d}", ods_code="ROLE1") for i in range(BATCH)]
    await stack.publish_eligibility([app_user(r.patient.nhs_number) for r in reqs[::2]])
    await stack.publish_many([("send-requests", r.message_id, r) for r in reqs])
    return {r.message_id for r in reqs}


async def _sent(stack: Any, expected: set[str], timeout: float = 90) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        sends = await stack.sends(references=True)
        if expected <= set(sends["references"]):
            return sends
        if asyncio.get_running_loop().time() > deadline:
            missing = expected - set(sends["references"])
            raise AssertionError(f"{len(missing)} never sent, e.g. {sorted(missing)[:3]}")
        await asyncio.sleep(0.5)


async def _samples(port: int, name: str) -> list[Any]:
    async with loopback.client(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


@pytest.mark.slow(40)
async def test_a_dispatcher_of_its_own_sends_each_message_once_across_the_switch(
    stack_factory: Any,
) -> None:
    stack = stack_factory(APPFIRST_PROVIDERS="simulator", APPFIRST_FALLBACK_INDIVIDUAL_SECONDS="3")
    await stack.start_simulator(send_callbacks=False)  # no read receipts: NHS App falls back
    await stack.publish("practice-settings", "ROLE1", practice("ROLE1"))

    await stack.start_worker()  # role "all": one kind of worker does everything
    before = await _publish(stack, "before")
    await _sent(stack, before)
    stack.stop_worker(0)

    await stack.start_worker(APPFIRST_ROLE="streams")
    _, dispatcher_port = await stack.start_worker(APPFIRST_ROLE="dispatcher")
    after = await _publish(stack, "after")
    app_first = {m for m in before | after if int(m[-3:]) % 2 == 0}
    fallbacks = {f"{m}/fallback" for m in app_first}
    sends = await _sent(stack, before | after | fallbacks)
    await asyncio.sleep(3)  # room for a wrong second send to show itself

    sends = await stack.sends(references=True)
    assert set(sends["references"]) == before | after | fallbacks
    twice = {r: v for r, v in sends["references"].items() if v["calls"] != 1}
    assert not twice, twice
    assert sends["duplicates"] == 0
    # The new group re-read every dispatch sent before the switch and absorbed it. (Fewer,
    # a partition's first record skipped in the group's first rebalance, is what
    # streams/rewind.py fixes. More is at-least-once at work: a second rebalance before a
    # commit re-reads records already sent, and the ledger absorbs them too.)
    absorbed = await _samples(dispatcher_port, "appfirst_sends_absorbed_total")
    assert sum(s.value for s in absorbed if s.labels["kind"] == "dispatch") >= BATCH, absorbed
    # The stream worker sent nothing itself: it runs no dispatcher.
    assert await _samples(stack.workers[1][1], "appfirst_provider_requests_total") == []
    assert await _samples(dispatcher_port, "appfirst_provider_requests_total") != []
