"""Every per-message row has an end: once messages settle, the tables shrink back to what
is still pending, on the worker and in the changelogs a recovery would read."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from appfirst.topics.models import DeliveryReceipt, ReadReceipt
from tests import loopback

from .factories import app_user, now, practice, request

pytestmark = pytest.mark.integration

KEEP = 3.0
SLACK = 10  # rows a changelog partition may hold past twice its rows
TABLES = ("routed", "sends", "message-rows")


async def _series(port: int, name: str, label: str) -> dict[str, float]:
    """``name``'s value by ``label``, from the worker's ``/metrics``."""
    async with loopback.client(timeout=5.0) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    pattern = rf'^{name}\{{{label}="([^"]+)"\}} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.M)}


async def _table_rows(port: int) -> dict[str, float]:
    return await _series(port, "appfirst_table_rows", "table")


async def test_settled_rows_go_and_pending_ones_stay(stack_factory: Any) -> None:
    stack = stack_factory(
        APPFIRST_FALLBACK_INDIVIDUAL_SECONDS="2",
        APPFIRST_KEEP_SETTLED_SECONDS=str(KEEP),
        APPFIRST_KEEP_SENT_METRICS_SECONDS=str(KEEP),
        APPFIRST_RETENTION_INTERVAL_SECONDS="0.5",
        APPFIRST_CHANGELOG_SLACK_ROWS=str(SLACK),
    )
    await stack.publish("practice-settings", "A00001", practice("A00001"))
    _, port = await stack.start_worker()
    app = [request(f"app-{i:03d}") for i in range(100)]
    sms = [request(f"sms-{i:03d}") for i in range(100)]
    # Batch messages by the NHS App: a 24 h deadline, so still pending at the end.
    held = [request(f"held-{i:02d}", origin="batch", batch_id="b1") for i in range(20)]
    await stack.publish_eligibility([app_user(r.patient.nhs_number) for r in app + held])
    await stack.publish_many([("send-requests", r.message_id, r) for r in app + sms + held])
    await stack.read(["dispatches"], lambda rs: len(rs) >= 220, timeout=60)
    receipts: list[tuple[str, str, Any]] = []
    for r in app[::2]:  # read in time: no fallback
        receipts.append(
            ("read-receipts", r.message_id, ReadReceipt(message_id=r.message_id, read_at=now()))
        )
    for r in sms[::4]:  # SMS failures: joined to their number in the message's row
        receipt = DeliveryReceipt(
            message_id=r.message_id,
            channel="sms",
            status="permanent_failure",
            occurred_at=now(),
        )
        receipts.append(("delivery-receipts", r.message_id, receipt))
    await stack.publish_many(receipts)
    await stack.read(["fallbacks"], lambda rs: len(rs) >= 50, timeout=60)

    # A message's row (its deadline among its parts) is written after its dispatch is
    # out, and on a loaded machine the held messages' rows can trail the fallbacks above:
    # wait for them rather than race.
    deadline = time.monotonic() + 60
    while True:
        written = {t: await stack.read_raw_changelog(t) for t in ("routed", "message-rows")}
        routed = {r.message_id for r in app + sms + held} <= written["routed"]
        if routed and {r.message_id for r in app + held} <= written["message-rows"]:
            break
        assert time.monotonic() < deadline, {t: len(v) for t, v in written.items()}
        await asyncio.sleep(0.5)

    # Settled rows go once KEEP has passed; only the rows of the held messages, whose
    # fallbacks are still owed, stay (their routing decisions and sends are settled, and go).
    pending = {r.message_id for r in held}
    deadline = time.monotonic() + 60
    while True:
        live = {t: await stack.read_raw_changelog(t, live=True) for t in TABLES}
        rows = await _table_rows(port)
        settled = not any(live[t] for t in TABLES if t != "message-rows")
        if settled and live["message-rows"] == pending and rows.get("message-rows") == len(pending):
            break
        assert time.monotonic() < deadline, {t: len(v) for t, v in live.items()}
        await asyncio.sleep(0.5)
    assert {t: rows[t] for t in TABLES} == {t: 0 for t in TABLES} | {"message-rows": 20}
    # And the changelogs: their batches written again and the old ones tombstoned, so that
    # what compaction leaves for a recovery is bounded by the rows, not by the writes.
    deadline = time.monotonic() + 60
    while True:
        batches = {t: await stack.changelog_batches(t) for t in TABLES}
        held = {t: rows[t] for t in TABLES}
        bound = {t: 2 * held[t] + SLACK * stack.settings.partitions for t in TABLES}
        if all(batches[t][0] <= bound[t] for t in TABLES):
            break
        assert time.monotonic() < deadline, (batches, bound)
        await asyncio.sleep(0.5)
    assert all(tombstoned for _, tombstoned in batches.values()), batches
    # What the rows' databases take (ROW_STORE=disk), for the operators' dashboards.
    memory = await _series(port, "appfirst_rows_memory_bytes", "database")
    on_disk = await _series(port, "appfirst_rows_disk_bytes", "database")
    assert memory["message-rows"] > 0 and "cache" in memory
    assert {"message-rows", "deadline-index", "message-rows-ends"} <= set(on_disk)

    # A restarted worker recovers only what is pending, and the held messages still get
    # their fallback in time: retention deleted nothing a deadline needs.
    await stack.restart_worker(0)
    assert (await _table_rows(stack.workers[0][1])).get("message-rows") in (None, 20.0)
    fallbacks = await stack.read(["fallbacks"], lambda rs: False, timeout=2)
    assert not {e.message_id for _, e in fallbacks} & pending, "no early fallback"
