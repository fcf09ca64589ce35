"""The SIGUSR1 task dump: where a task waits, through tasks, agents and async generators."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from appfirst.streams.taskdump import awaiting, dump_tasks


class Awaitable:
    """Awaited the way Faust awaits an agent's actor: through ``__await__``."""

    def __init__(self, gate: asyncio.Event) -> None:
        self.gate = gate

    def __await__(self):  # type: ignore[no-untyped-def]
        return inner(self.gate).__await__()


async def inner(gate: asyncio.Event) -> None:
    await gate.wait()


async def items(gate: asyncio.Event) -> AsyncIterator[int]:
    await gate.wait()
    yield 1


async def consume(gate: asyncio.Event, secret: str) -> None:
    async for _ in items(gate):
        pass


async def joins(task: asyncio.Task[None]) -> None:
    await task


async def outer(gate: asyncio.Event) -> None:
    await Awaitable(gate)


async def test_the_chain_follows_wrappers_generators_and_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = asyncio.Event()
    wrapped = asyncio.create_task(outer(gate))
    looping = asyncio.create_task(consume(gate, secret="9434765919"))
    waiting_on_task = asyncio.create_task(joins(looping))
    await asyncio.sleep(0)
    names = [" ".join(awaiting(t.get_coro())) for t in (wrapped, looping, waiting_on_task)]
    assert "outer" in names[0] and "inner" in names[0]
    assert "consume" in names[1] and "items" in names[1]
    assert "[consume]" in names[2] and "items" in names[2]
    with caplog.at_level(logging.WARNING, logger="appfirst.streams"):
        assert dump_tasks() >= 3
    assert "items (" in caplog.text
    assert "9434765919" not in caplog.text  # frames by name and line, never their locals
    gate.set()
    await asyncio.gather(wrapped, looping, waiting_on_task)
