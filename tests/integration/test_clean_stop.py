"""A clean stop (SIGTERM: scale-in, a deploy) while a send is under way.

Faust cancels every agent mid-event when it stops, and its stream iterator then counts that
event as processed. The send under way must be finished, and its ledger row written, before
the worker lets go: otherwise the next owner of the partition either never sends it (the
event committed over) or sends it a second time (read again with no ledger row).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests import loopback

from .factories import practice, request

pytestmark = pytest.mark.integration

BATCH = 20
STALL_SECONDS = 3.0  # under the provider timeout (5 s): answered late, not unconfirmed


async def _wait_for(stack: Any, done: Any, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        sends = await stack.sends(references=True)
        if done(sends):
            return sends
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {sends['total']} sent of {BATCH}")
        await asyncio.sleep(0.1)


@pytest.mark.slow(25)
async def test_a_send_under_way_at_a_clean_stop_is_sent_exactly_once(
    stack_factory: Any,
) -> None:
    stack = stack_factory(APPFIRST_PROVIDERS="simulator")
    url = await stack.start_simulator(send_callbacks=False)
    await stack.publish("practice-settings", "STOP1", practice("STOP1"))
    proc, _ = await stack.start_worker()
    async with loopback.client(timeout=5) as client:
        # The first sends reach the simulator, are recorded, and are answered late.
        await client.post(f"{url}/_sim/stall", json={"count": 3, "seconds": STALL_SECONDS})

    reqs = [request(f"stop-{i:03d}", ods_code="STOP1") for i in range(BATCH)]
    await stack.publish_many([("send-requests", r.message_id, r) for r in reqs])
    await _wait_for(stack, lambda s: s["total"] >= 1, 60, "no send began")

    started = time.monotonic()
    stack.stop_worker(0)  # SIGTERM while the first send waits for its answer
    stopped_in = time.monotonic() - started
    assert proc.returncode == 0, f"worker exited {proc.returncode}"

    await stack.start_worker()
    expected = {r.message_id for r in reqs}
    await _wait_for(
        stack, lambda s: expected <= set(s["references"]), 90, "never sent after the stop"
    )
    await asyncio.sleep(3)  # room for a wrong second send to show itself

    sends = await stack.sends(references=True)
    twice = {ref: v["calls"] for ref, v in sends["references"].items() if v["calls"] != 1}
    assert not twice, f"sent more than once: {twice} (stop took {stopped_in:.1f} s)"
    assert sends["duplicates"] == 0
    assert set(sends["references"]) == expected


FACTS = 3000


@pytest.mark.slow(55)
async def test_pilot_facts_are_counted_once_across_a_clean_stop(stack_factory: Any) -> None:
    """SIGTERM while the per-message agent is taking in dispatches: the facts it sent for
    the batch under way must have their rows written before it lets go, or the next owner
    reads the batch again and sends them again (``metric-facts`` takes no repeats).

    It also found a stall, fixed since (``RewindingConsumer._read_again_what_was_dropped``):
    in about 1 run in 3, the restarted worker, ready, read nothing more of some partitions
    of ``router-by-patient`` and ``dispatches``: fetched to their end, handed out to no
    stream, and the rest was routed only after another restart."""
    import json

    stack = stack_factory()
    await stack.publish("practice-settings", "STOP2", practice("STOP2"))
    proc, _ = await stack.start_worker()
    reqs = [request(f"fact-{i:04d}", ods_code="STOP2") for i in range(FACTS)]
    await stack.publish_many([("send-requests", r.message_id, r) for r in reqs])

    async def sent_facts() -> list[str]:
        records = [json.loads(r.value) for r in await stack.read_records("metric-facts")]
        return [f["kind"] for r in records for f in r["facts"] if f["kind"] == "sent"]

    deadline = time.monotonic() + 60
    while not await sent_facts():  # stop once the first facts are out, the rest under way
        assert time.monotonic() < deadline, "no pilot fact within 60 s"
        await asyncio.sleep(0.05)
    stack.stop_worker(0)
    assert proc.returncode == 0, f"worker exited {proc.returncode}"
    stopped_at = len(await sent_facts())

    await stack.start_worker()
    # Every request routed (the router's own ledger), then every dispatch taken in (the
    # per-message agent's rows): nothing is to come.
    keys = {r.message_id for r in reqs}
    await stack.absorbed("routed", keys, timeout=90)
    await stack.absorbed("message-rows", keys, timeout=90)
    sent = await sent_facts()
    assert len(sent) == FACTS, (
        f"{len(sent)} sent facts for {FACTS} messages ({stopped_at} at the stop)"
    )
