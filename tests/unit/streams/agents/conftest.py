"""Agents run alone, without a broker: each test starts one agent through Faust's own
``test_context``, feeds it records as they would come from their topics, and reads what it
sent from an in-memory outbox (``streams/io.Outbox``) and what it wrote from its tables.
What only the broker can show (offsets, rebalances, crashes, recovery) is in
``tests/integration``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from appfirst.streams import app as app_module
from appfirst.streams import io


class AgentFailed(Exception):
    """Where a worker would exit crash-only."""


@pytest.fixture
async def outbox(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[io.Outbox]:
    app = app_module.app
    app.finalize()
    app.flow_control.resume()

    def failed() -> None:
        raise AgentFailed

    monkeypatch.setattr(app_module, "exit_crash_only", failed)
    box = io.Outbox()
    io.divert_to(box)
    try:
        yield box
    finally:
        io.divert_to(None)
