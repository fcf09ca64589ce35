"""The producer buffer that can say when what was written has left it
(``streams/producer.py``): Faust's own flush returns once no record has left its buffer for
0.1 s, with records still in it."""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import pytest

from appfirst.settings import get_settings
from appfirst.streams import producer as producer_module
from appfirst.streams.app import make_app
from appfirst.streams.producer import DrainableBuffer


class SlowChannel:
    """A topic whose publish waits until the test lets it go, as on a starved loop."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.published: list[Any] = []

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await self.go.wait()
        self.published.append(fut.n)


def _buffer() -> DrainableBuffer:
    buffer = DrainableBuffer()
    buffer.app = types.SimpleNamespace(conf=types.SimpleNamespace(producer_threaded=False))
    return buffer


def _record(channel: SlowChannel, n: int) -> Any:
    return types.SimpleNamespace(n=n, message=types.SimpleNamespace(channel=channel))


@contextlib.asynccontextmanager
async def _running() -> AsyncIterator[tuple[DrainableBuffer, SlowChannel]]:
    """A started buffer and its slow topic; the topic is let go and the buffer stopped after."""
    buffer = _buffer()
    channel = SlowChannel()
    await buffer.start()
    try:
        yield buffer, channel
    finally:
        channel.go.set()
        await buffer.stop()


async def test_faust_flush_returns_early_and_ours_waits_for_what_was_written() -> None:
    async with _running() as (buffer, channel):
        for n in range(3):
            buffer.put(_record(channel, n))
        # Nothing leaves within 0.1 s: Faust's flush gives up with every record still in.
        await buffer.flush()
        assert channel.published == []
        drained = asyncio.create_task(buffer.handed_up_to(buffer.queued))
        await asyncio.sleep(0)
        assert not drained.done()
        # Written after the drain began: not waited for.
        buffer.put(_record(channel, 3))
        channel.go.set()
        await asyncio.wait_for(drained, 5)
        assert channel.published[:3] == [0, 1, 2]


async def test_the_record_the_task_holds_is_waited_for() -> None:
    async with _running() as (buffer, channel):
        buffer.put(_record(channel, 0))
        for _ in range(100):  # loop turns: the buffer's task takes the record
            if buffer.size == 0:
                break
            await asyncio.sleep(0)
        assert buffer.size == 0 and buffer.handed == 0  # taken, not handed on
        await buffer.flush()  # Faust's sees an empty queue and returns at once
        drained = asyncio.create_task(buffer.handed_up_to(buffer.queued))
        await asyncio.sleep(0.05)
        assert not drained.done()
        channel.go.set()
        await asyncio.wait_for(drained, 5)
        assert channel.published == [0]


async def test_a_stopping_buffer_is_not_waited_for() -> None:
    buffer = _buffer()
    channel = SlowChannel()
    await buffer.start()
    buffer.put(_record(channel, 0))
    drained = asyncio.create_task(buffer.handed_up_to(buffer.queued))
    await asyncio.sleep(0)
    stopping = asyncio.create_task(buffer.stop())
    channel.go.set()  # lets the stop (which flushes) and the wait end
    await asyncio.wait_for(asyncio.gather(drained, stopping), 5)


class SteadyChannel:
    """A topic that takes each record after a short wait, as a busy producer does."""

    def __init__(self) -> None:
        self.published: list[Any] = []

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(0.002)
        self.published.append(fut.n)


async def test_a_flush_is_not_held_by_writes_made_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Other agents keep writing (the dispatcher's lanes, the tracker): Faust's buffer flush
    # waits until the buffer is empty, which a steady stream of writes never lets it be.
    # A worker's router waited over two minutes so in one flush under load. Ours waits for
    # what was written before it only.
    app = make_app(get_settings())
    producer = app.producer
    buffer = _buffer()  # its own, not the app's
    monkeypatch.setattr(producer, "drainable", buffer)
    channel = SteadyChannel()
    await buffer.start()
    writing = True

    async def keep_writing() -> None:
        n = 0
        while writing:
            buffer.put(_record(channel, n))
            n += 1
            await asyncio.sleep(0.001)

    writer = asyncio.create_task(keep_writing())
    try:
        await asyncio.sleep(0.05)
        mark = buffer.queued
        await asyncio.wait_for(producer.flush(), 5)
        assert len(channel.published) >= mark
        assert channel.published[:mark] == list(range(mark))
        # Not asserted beside it: that Faust's buffer flush is held meanwhile. It is, unless
        # the loop is starved for 0.1 s (a loaded machine), when it returns at once.
    finally:
        writing = False
        await writer
        await asyncio.wait_for(producer.flush(), 30)  # empty, so that the stop may flush
        await buffer.stop()


class Exited(Exception):
    pass


class FailingChannel:
    """A topic whose second record cannot be handed on: the buffer's task fails."""

    def __init__(self) -> None:
        self.published: list[Any] = []

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        if fut.n == 1:
            raise RuntimeError("cannot hand on")
        self.published.append(fut.n)


def _exits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reasons: list[str] = []

    def record(reason: str) -> NoReturn:
        reasons.append(reason)
        raise Exited(reason)

    monkeypatch.setattr(producer_module, "_exit", record)
    return reasons


def _flushing(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[str]]:
    """An app's producer with nothing queued and nothing undelivered yet, and the reasons
    its flush would exit the worker with."""
    producer = make_app(get_settings()).producer
    reasons = _exits(monkeypatch)
    monkeypatch.setattr(producer, "drainable", _buffer())
    monkeypatch.setattr(producer, "undelivered", 0)
    return producer, reasons


async def test_a_buffer_that_failed_with_writes_in_it_fails_the_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Faust's flush raised here ("Producer not Running"); ours must not return as if the
    # writes were made: the commit after it would pass them.
    app = make_app(get_settings())
    reasons = _exits(monkeypatch)
    producer = app.producer
    buffer = DrainableBuffer()
    buffer.app = types.SimpleNamespace(conf=types.SimpleNamespace(producer_threaded=False))
    monkeypatch.setattr(producer, "drainable", buffer)
    channel = FailingChannel()
    await buffer.start()
    try:
        for n in range(4):
            buffer.put(_record(channel, n))
        for _ in range(200):
            if buffer.state == "crashed":
                break
            await asyncio.sleep(0.01)
        assert buffer.state == "crashed"
        with pytest.raises(Exited):
            await asyncio.wait_for(producer.flush(), 5)
        assert channel.published == [0]
        assert reasons == ["the producer buffer failed with table writes still in it"]
    finally:
        with pytest.raises(RuntimeError, match="Producer not Running"):
            await buffer.stop()  # Faust's flush on stop refuses too, records still in


async def test_a_record_the_broker_never_took_fails_the_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aiokafka's flush returns when a batch is given up on, without raising.
    producer, reasons = _flushing(monkeypatch)
    given_up: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    given_up.set_exception(TimeoutError("batch expired"))
    producer._delivered(given_up)
    with pytest.raises(Exited):
        await asyncio.wait_for(producer.flush(), 5)
    assert reasons == ["1 records not delivered to the broker"]


async def test_rows_held_back_go_in_before_a_flush_takes_its_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The per-message tables hold their rows back to send them as a batch
    # (streams/rowlog.py): Faust's commit flushes after choosing its offsets, so the flush
    # must put them in first and wait for them, or an offset could pass a row never sent.
    app = make_app(get_settings())
    producer = app.producer
    buffer = _buffer()
    monkeypatch.setattr(producer, "drainable", buffer)
    channel = SlowChannel()
    app.before_flush.append(lambda: buffer.put(_record(channel, 7)))
    await buffer.start()
    try:
        flushing = asyncio.create_task(producer.flush())
        await asyncio.sleep(0.05)
        assert not flushing.done()  # waiting for the row the table held back
        channel.go.set()
        await asyncio.wait_for(flushing, 5)
        assert channel.published == [7]
    finally:
        channel.go.set()
        await buffer.stop()


class FakeAiokafka:
    """aiokafka's producer as ``send_record`` and ``flush`` use it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int | None]] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, partition: int | None
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, value, key, partition))
        self.futures.append(asyncio.get_running_loop().create_future())
        return self.futures[-1]

    async def flush(self) -> None:
        await asyncio.gather(*self.futures, return_exceptions=True)


async def test_a_record_sent_straight_to_aiokafka_is_accounted_for_by_the_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Io.send skips Faust's Topic.send: what it sends must still fail a flush if the
    # broker never takes it, or Faust would commit past an output that was lost.
    producer, reasons = _flushing(monkeypatch)
    fake = FakeAiokafka()
    monkeypatch.setattr(producer, "_producer", fake)
    taken = await producer.send_record("appfirst.dispatches", b"m-1", b"{}", None)
    lost = await producer.send_record("appfirst.metric-facts", None, b"[]", 3)
    assert fake.sent == [
        ("appfirst.dispatches", b"{}", b"m-1", None),  # partitioned by key, by aiokafka
        ("appfirst.metric-facts", b"[]", None, 3),
    ]
    taken.set_result(None)
    lost.set_exception(TimeoutError("batch expired"))
    with pytest.raises(Exited):
        await asyncio.wait_for(producer.flush(), 5)
    assert reasons == ["1 records not delivered to the broker"]
