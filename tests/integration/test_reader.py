"""Reading topics back: a wait bounded by progress ends once records stop coming, long
before its time limit, with what it read."""

from __future__ import annotations

import time
from typing import Any

import pytest

from appfirst.topics.models import ReadReceipt

from .factories import now

pytestmark = pytest.mark.integration


async def test_a_read_ends_when_records_stop_coming(stack_factory: Any) -> None:
    stack = stack_factory()
    await stack.publish("read-receipts", "m-1", ReadReceipt(message_id="m-1", read_at=now()))
    started = time.monotonic()
    seen = await stack.read(["read-receipts"], lambda rs: False, timeout=120, stall=2)
    assert [e.message_id for _, e in seen] == ["m-1"]
    assert time.monotonic() - started < 60, "ended by the time limit, not by the stall"
