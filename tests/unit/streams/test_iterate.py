"""The stream iterator of ``AckedStream`` (``streams/iterate.py``): every value, in order,
letting the event loop run every ``YIELD_EVERY`` values taken without waiting, where
Faust's own iterator lets it run before each one. Faust's in-memory channel stands in for a
topic: no broker."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from typing import Any

import pytest
from faust.streams import Stream

from appfirst.settings import get_settings
from appfirst.streams.app import make_app
from appfirst.streams.iterate import YIELD_EVERY
from appfirst.streams.rewind import AckedStream

VALUES = 10 * YIELD_EVERY


async def _turns_while_taking(fausts: bool) -> tuple[list[Any], int]:
    """The values a stream hands out from a full queue, and how often the loop ran other
    tasks meanwhile."""
    app = make_app(get_settings())
    app.flow_control.resume()  # as a started worker's is: puts wait while it is not
    channel = app.channel()
    stream = app.stream(channel)
    assert isinstance(stream, AckedStream)
    seen: list[Any] = []

    async def take() -> None:
        iterator = stream._py_aiter() if fausts else stream
        async for value in iterator:
            seen.append(value)
            if len(seen) == VALUES:
                return

    taking = asyncio.ensure_future(take())
    await asyncio.sleep(0.01)  # subscribed, waiting on an empty queue
    for n in range(VALUES):
        await channel.put(n)  # all queued before the stream takes the second
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counting = asyncio.ensure_future(count_turns())
    try:
        await asyncio.wait_for(taking, 5)
    finally:
        counting.cancel()
        await stream.stop()
    return seen, turns


@pytest.mark.parametrize("fausts", [False, True], ids=["ours", "fausts"])
async def test_every_value_in_order_and_the_loop_runs_every_few(fausts: bool) -> None:
    seen, turns = await _turns_while_taking(fausts)
    assert seen == list(range(VALUES))
    if fausts:
        assert turns >= VALUES  # a turn of the loop before every value
    else:
        # Other tasks still run while the queue stays full (the fallback sweep must).
        assert VALUES // YIELD_EVERY - 1 <= turns <= VALUES // YIELD_EVERY + 2


async def test_a_value_put_while_the_stream_waits_is_taken() -> None:
    app = make_app(get_settings())
    app.flow_control.resume()
    channel = app.channel()
    stream = app.stream(channel)

    async def first() -> int:
        async for value in stream:
            return int(value)
        raise AssertionError("the stream ended")

    taking = asyncio.ensure_future(first())
    await asyncio.sleep(0.01)
    assert not taking.done()
    await channel.put(7)
    assert await asyncio.wait_for(taking, 5) == 7
    await stream.stop()


def test_the_iterator_copied_is_fausts_as_installed() -> None:
    # iterate.py copies Faust's Stream._py_aiter (faust-streaming 0.15.3): a Faust whose
    # iterator differs must be compared with the copy before it is let in.
    source = inspect.getsource(Stream._py_aiter)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == "3a48ee257a65435b"
