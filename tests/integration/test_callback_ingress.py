"""Callbacks are durable before they are answered: a 202 from a real worker means its
record is on its topic at the broker; a broker that does not acknowledge gets the provider
a 503 with ``Retry-After``, so the provider retries."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from appfirst.broker import EmbeddedBroker
from tests import loopback

from .conftest import Stack

pytestmark = pytest.mark.integration

TOKEN = {"Authorization": "Bearer appfirst-dev-callback-token"}  # the sandbox default
LINGER = 1.0


def notify_receipt(message_id: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "id": str(uuid.uuid4()),
        "reference": message_id,
        "to": "redacted",
        "status": "delivered",
        "created_at": now,
        "completed_at": now,
        "sent_at": now,
        "notification_type": "sms",
    }


async def test_a_202_means_the_record_is_already_on_its_topic(
    stack_factory: Callable[..., Stack],
) -> None:
    # Output lingers a second in the producer before it is sent: answered when buffered,
    # as before, a callback's record would not be on the topic when its 202 arrives.
    stack = stack_factory(APPFIRST_PRODUCER_LINGER_SECONDS=str(LINGER))
    _, port = await stack.start_worker()
    url = f"http://127.0.0.1:{port}/callbacks"
    ids = [f"cb-{uuid.uuid4().hex[:12]}" for _ in range(100)]
    responder = f"cb-{uuid.uuid4().hex[:12]}"
    async with loopback.client(timeout=30.0) as client:
        began = time.monotonic()
        answers = await asyncio.gather(
            *(client.post(f"{url}/notify", json=notify_receipt(m), headers=TOKEN) for m in ids),
            client.post(
                f"{url}/responses",
                json={
                    "message_id": responder,
                    "responded_at": datetime.now(UTC).isoformat(),
                    "attachments": 0,
                },
                headers=TOKEN,
            ),
        )
        elapsed = time.monotonic() - began
    assert [a.status_code for a in answers] == [202] * len(answers)
    # No waiting: what the 202s promised is readable now.
    receipts = {json.loads(v)["message_id"] for v in await stack.read_raw("delivery-receipts")}
    assert set(ids) <= receipts
    responses = {json.loads(v)["message_id"] for v in await stack.read_raw("responses")}
    assert responder in responses
    assert elapsed >= LINGER  # each answer did wait for its acknowledgement...
    # ...and 101 of them waited side by side, one batch, not a flush each (101 s).
    assert elapsed < 10 * LINGER


async def _until_stopped(pid: int, timeout: float = 5.0) -> None:
    """Waits until every thread of ``pid`` is stopped (state T in /proc)."""
    deadline = time.monotonic() + timeout
    tasks = Path(f"/proc/{pid}/task")
    while True:
        states = {
            (task / "stat").read_text().rsplit(")", 1)[1].split()[0] for task in tasks.iterdir()
        }
        if states == {"T"}:
            return
        assert time.monotonic() < deadline, f"broker not stopped: thread states {states}"
        await asyncio.sleep(0.01)


async def test_a_broker_that_does_not_acknowledge_gets_the_provider_a_503(
    tmp_path: Path,
) -> None:
    # A broker of its own, to freeze (SIGSTOP) under a running worker: connections stay
    # open and nothing is answered, as with a hung or partitioned broker.
    with EmbeddedBroker() as broker:
        stack = Stack(broker, tmp_path, APPFIRST_CALLBACK_ACK_TIMEOUT_SECONDS="1")
        try:
            _, port = await stack.start_worker()
            url = f"http://127.0.0.1:{port}/callbacks/notify"
            async with loopback.client(timeout=30.0) as client:
                ok = await client.post(url, json=notify_receipt("cb-before"), headers=TOKEN)
                assert ok.status_code == 202
                assert broker.process is not None
                os.kill(broker.process.pid, signal.SIGSTOP)
                try:
                    # A stop is delivered when the process is next scheduled: seen once (in
                    # about twenty runs) answering the next record before it took hold.
                    await _until_stopped(broker.process.pid)
                    began = time.monotonic()
                    refused = await client.post(
                        url, json=notify_receipt("cb-frozen"), headers=TOKEN
                    )
                    waited = time.monotonic() - began
                finally:
                    os.kill(broker.process.pid, signal.SIGCONT)
                assert refused.status_code == 503, refused.text
                assert refused.headers["Retry-After"] == "5"
                assert refused.json() == {
                    "error": "unavailable",
                    "reason": "broker did not acknowledge in time",
                }
                assert 1.0 <= waited < 5.0  # bounded by the setting, not the producer's own
                # The broker back: the provider's retry is accepted.
                retried = await client.post(url, json=notify_receipt("cb-frozen"), headers=TOKEN)
                assert retried.status_code == 202
                metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            counted = 'appfirst_callbacks_total{outcome="unacknowledged",provider="notify"} 1.0'
            assert counted in metrics
        finally:
            await stack.close()


async def test_a_response_the_patient_responses_page_would_not_take_is_a_400(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory()
    _, port = await stack.start_worker()
    url = f"http://127.0.0.1:{port}/callbacks/responses"
    at = datetime.now(UTC).isoformat()
    too_many = [{"name": f"photo{i}.jpg", "size_bytes": 1000} for i in range(6)]
    async with loopback.client(timeout=30.0) as client:
        answers = [
            await client.post(
                url,
                json={"message_id": "resp-1", "responded_at": at, "files": files},
                headers=TOKEN,
            )
            for files in (
                too_many,
                [{"name": "scan.pdf", "size_bytes": 8_000_000}],
                [{"name": "setup.exe", "size_bytes": 10}],
            )
        ]
        good = await client.post(
            url,
            json={"message_id": "resp-2", "responded_at": at, "files": too_many[:5]},
            headers=TOKEN,
        )
    assert [a.status_code for a in answers] == [400, 400, 400]
    reasons = [a.json()["error"] for a in answers]
    assert "at most 5" in reasons[0] and "over 7 MB" in reasons[1] and "exe" in reasons[2]
    assert good.status_code == 202
    written = {json.loads(v)["message_id"] for v in await stack.read_raw("responses")}
    assert written == {"resp-2"}, "a refused response is never written"
