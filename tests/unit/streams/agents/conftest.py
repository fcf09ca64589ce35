"""Agents run alone, without a broker: each test starts one agent through Faust's own
``test_context``, feeds it records as they would come from their topics, and reads what it
sent from an in-memory outbox (``streams/io.Outbox``) and what it wrote from its tables.
What only the broker can show (offsets, rebalances, crashes, recovery) is in
``tests/integration``."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import pytest

from appfirst.streams import app as app_module
from appfirst.streams import io
from tests.unit.streams.agents import driver


@pytest.fixture
async def outbox(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[io.Outbox]:
    app = app_module.app
    app.finalize()
    app.flow_control.resume()

    def failed() -> None:
        # Where a worker would exit crash-only: kept, so that the test's next wait fails
        # with the agent's own error (Faust's test wrapper only notes the crash).
        driver.crashes.append(sys.exc_info()[1] or driver.AgentFailed("no error"))
        raise driver.AgentFailed

    monkeypatch.setattr(app_module, "exit_crash_only", failed)
    box = io.Outbox()
    io.divert_to(box)
    driver.crashes.clear()
    try:
        yield box
        assert not driver.crashes, f"the agent failed: {driver.crashes[0]!r}"
    finally:
        io.divert_to(None)
        driver.crashes.clear()
