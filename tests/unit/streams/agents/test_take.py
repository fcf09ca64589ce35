"""``streams/take.py``: a batching stream that never wakes while idle, and still hands out
a batch at most ``within`` after its first event, or as soon as it is full."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from appfirst.streams.take import TakeStream
from tests.unit.streams.agents.conftest import Build
from tests.unit.streams.agents.driver import until


async def test_an_idle_stream_sleeps_and_batches_still_come(
    build: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    wakes = 0
    original = TakeStream.wait_for_stopped

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal wakes
        wakes += 1
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(TakeStream, "wait_for_stopped", counted)
    app = build().app
    batches: list[tuple[float, list[int]]] = []

    @app.agent()
    async def take(stream: Any) -> None:
        async for batch in stream.take_events(5, within=0.005):
            batches.append((time.monotonic(), [event.value for event in batch]))

    async with take.test_context() as agent:
        await asyncio.sleep(0.5)
        # Faust's own would have woken every 5 ms, a hundred times by now.
        assert wakes <= 2, wakes

        sent = time.monotonic()
        await agent.put(1)
        await agent.put(2)
        await until(lambda: batches)
        at, values = batches[0]
        assert values == [1, 2]
        assert at - sent < 0.5  # within its window (5 ms), with room for a busy machine

        for value in range(3, 15):  # more than a batch: full ones go at once, none over 5
            await agent.put(value)
        await until(lambda: sum(len(v) for _, v in batches) == 14)
    assert [len(v) for _, v in batches[1:]][:2] == [5, 5]
    assert [x for _, v in batches for x in v] == list(range(1, 15))
