"""The producer buffer that can say when it is empty (``streams/producer.py``): Faust's own
flush returns once no record has left its buffer for 0.1 s, with records still in it."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable
from typing import Any

from appfirst.streams.producer import DrainableBuffer


class SlowChannel:
    """A topic whose publish waits until the test lets it go, as on a starved loop."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.published: list[Any] = []

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await self.go.wait()
        self.published.append(fut)


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(10_000):  # loop turns, not time: the buffer's task needs a few
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never came true")


def _buffer() -> DrainableBuffer:
    buffer = DrainableBuffer()
    buffer.app = types.SimpleNamespace(conf=types.SimpleNamespace(producer_threaded=False))
    return buffer


async def test_a_record_taken_from_the_queue_but_not_handed_on_is_not_drained() -> None:
    buffer = _buffer()
    channel = SlowChannel()
    await buffer.start()
    try:
        buffer.put(types.SimpleNamespace(message=types.SimpleNamespace(channel=channel)))
        await _until(lambda: buffer.size == 0)  # the buffer's task takes the record
        # Faust's flush sees an empty queue and returns: the record is still on its way.
        await buffer.flush()
        assert not channel.published
        assert buffer.in_flight == 1 and not buffer.drained
        channel.go.set()
        await _until(lambda: buffer.drained)
        assert len(channel.published) == 1
    finally:
        await buffer.stop()


async def test_records_left_in_the_queue_are_not_drained() -> None:
    buffer = _buffer()
    channel = SlowChannel()
    await buffer.start()
    try:
        for _ in range(3):
            buffer.put(types.SimpleNamespace(message=types.SimpleNamespace(channel=channel)))
        # Nothing leaves within 0.1 s: Faust's flush gives up with records queued.
        await buffer.flush()
        assert buffer.size >= 2 and not buffer.drained
        channel.go.set()
        await _until(lambda: buffer.drained)
        assert len(channel.published) == 3
    finally:
        await buffer.stop()
