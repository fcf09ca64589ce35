"""Feeding an agent started with ``test_context`` and waiting on what it does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from faust.types import Message


class AgentFailed(Exception):
    """Where a worker would exit crash-only."""


crashes: list[BaseException] = []  # errors agents failed with, in this test


async def feed(
    agent: Any, topic: str, key: bytes | None, value: bytes, *, partition: int = 0
) -> None:
    """One record to a running agent, as read from ``topic`` (contract name)."""
    channel = agent.stream().channel
    message = Message(
        topic=agent.app.settings.topic(topic),
        partition=partition,
        offset=agent.sent_offset,
        timestamp=time.time(),
        timestamp_type=0,
        headers=None,
        key=key,
        value=value,
        checksum=b"",
        serialized_key_size=0,
        serialized_value_size=0,
        generation_id=agent.app.consumer_generation_id,
    )
    await channel.put(await channel.decode(message))
    agent.sent_offset += 1


async def until(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Waits until ``condition()`` is true (and returns it): the agent runs in its own task."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if crashes:
            raise AgentFailed(f"the agent failed: {crashes[0]!r}") from crashes[0]
        if time.monotonic() > deadline:
            raise TimeoutError("the agent did not get there")
        await asyncio.sleep(0.005)
    return result
