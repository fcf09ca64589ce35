"""Agents run alone, without a broker: each test starts one agent through Faust's own
``test_context``, feeds it records as they would come from their topics, and reads what it
sent from an in-memory outbox (``streams/io.Outbox``) and what it wrote from its tables.
What only the broker can show (offsets, rebalances, crashes, recovery) is in
``tests/integration``."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from appfirst.clock import Clock
from appfirst.settings import get_settings
from appfirst.streams import app as app_module
from appfirst.streams import io
from appfirst.streams.worker import Appfirst, create_app
from tests.unit.streams.agents import driver

Build = Callable[..., Appfirst]


@pytest.fixture
def build(outbox: io.Outbox, tmp_path: Path) -> Build:
    """``build("messages", clock=..., providers="off")``: a worker's app with only these
    parts (and those they need), from the test environment's settings with these
    overrides, sending to ``outbox``. Each test builds its own: no state is shared between tests."""

    def make(*parts: str, clock: Clock | None = None, **overrides: Any) -> Appfirst:
        # The rows on disk go under the test's own directory.
        settings = get_settings().model_copy(update={"data_dir": str(tmp_path), **overrides})
        built = create_app(settings, parts, clock=clock)
        built.app.finalize()
        built.app.flow_control.resume()
        built.context.io.divert_to(outbox)
        return built

    return make


@pytest.fixture
async def outbox(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[io.Outbox]:
    def failed() -> None:
        # Where a worker would exit crash-only: kept, so that the test's next wait fails
        # with the agent's own error (Faust's test wrapper only notes the crash).
        driver.crashes.append(sys.exc_info()[1] or driver.AgentFailed("no error"))
        raise driver.AgentFailed

    monkeypatch.setattr(app_module, "exit_crash_only", failed)
    box = io.Outbox()
    driver.crashes.clear()
    try:
        yield box
        assert not driver.crashes, f"the agent failed: {driver.crashes[0]!r}"
    finally:
        driver.crashes.clear()
