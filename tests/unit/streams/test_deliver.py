"""Faust's consumer loop delivering inline (``streams/deliver.py``): a delivery under way is
given up when the flow is suspended, the consumer stops or crashes, as Faust's
``wait_first`` gives it up, and nothing else about it changes. The consumer alone, as its
loop uses it: no app, no broker."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from mode.utils.locks import Event as ModeEvent

from appfirst.streams.rewind import RewindingConsumer

MESSAGE = object()


@pytest.fixture
async def consumer() -> AsyncIterator[Any]:
    consumer: Any = RewindingConsumer.__new__(RewindingConsumer)
    consumer.suspend_flow = asyncio.Event()  # as Faust's Consumer makes them
    consumer._stopped = ModeEvent()
    consumer._crashed = ModeEvent()
    consumer._loop = asyncio.get_running_loop()
    yield consumer
    consumer._stop_watching()


class Blocked:
    """A delivery that waits until let go, as one into a full stream queue does."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.started = asyncio.Event()
        self.cancelled = False
        self.done = False

    async def __call__(self, message: Any) -> None:
        assert message is MESSAGE
        self.started.set()
        try:
            await self.go.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.done = True


async def _delivering(consumer: Any, callback: Blocked) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(consumer._deliver(callback, MESSAGE))
    await asyncio.wait_for(callback.started.wait(), 5)
    return task


async def test_a_delivery_runs_to_its_end_in_the_loops_own_task(consumer: Any) -> None:
    seen: list[asyncio.Task[Any] | None] = []

    async def deliver(message: Any) -> None:
        seen.append(asyncio.current_task())

    await consumer._deliver(deliver, MESSAGE)
    await consumer._deliver(deliver, MESSAGE)
    assert seen == [asyncio.current_task()] * 2  # no task made for it
    assert consumer._delivering is None


@pytest.mark.parametrize("event", ["suspend_flow", "_stopped", "_crashed"])
async def test_a_delivery_under_way_is_given_up_when_an_event_fires(
    consumer: Any, event: str
) -> None:
    callback = Blocked()
    task = await _delivering(consumer, callback)
    getattr(consumer, event).set()
    await asyncio.wait_for(task, 5)  # returns, as wait_first does: the loop goes on
    assert callback.cancelled and not callback.done
    assert task.cancelling() == 0  # nothing left over to cancel the loop's next await


async def test_the_flow_resumed_the_next_delivery_is_watched_again(consumer: Any) -> None:
    consumer.suspend_flow.set()
    consumer.suspend_flow.clear()
    first = Blocked()
    task = await _delivering(consumer, first)
    first.go.set()
    await asyncio.wait_for(task, 5)
    assert first.done
    consumer.suspend_flow.set()  # between deliveries: nothing to give up
    await asyncio.sleep(0.01)
    consumer.suspend_flow.clear()
    second = Blocked()
    task = await _delivering(consumer, second)
    consumer.suspend_flow.set()
    await asyncio.wait_for(task, 5)
    assert second.cancelled and not second.done


async def test_with_the_flow_already_suspended_the_record_goes_through_wait_first(
    consumer: Any,
) -> None:
    consumer.suspend_flow.set()
    callback = Blocked()
    await asyncio.wait_for(consumer._deliver(callback, MESSAGE), 5)
    assert not callback.done  # given up at once, as Faust's loop gives it up


async def test_a_cancellation_from_outside_goes_on_up(consumer: Any) -> None:
    callback = Blocked()
    task = await _delivering(consumer, callback)
    task.cancel()  # a stop cancelling the fetcher
    with pytest.raises(asyncio.CancelledError):
        await task
    assert callback.cancelled


async def test_an_outside_cancellation_at_the_same_time_as_ours_goes_on_up(
    consumer: Any,
) -> None:
    callback = Blocked()
    task = await _delivering(consumer, callback)
    consumer.suspend_flow.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_delivery_that_fails_raises_its_error(consumer: Any) -> None:
    async def deliver(message: Any) -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        await consumer._deliver(deliver, MESSAGE)
    assert consumer._delivering is None


async def test_watchers_do_not_pile_up_over_rebalances(consumer: Any) -> None:
    async def deliver(message: Any) -> None:
        pass

    await consumer._deliver(deliver, MESSAGE)
    tasks = len(asyncio.all_tasks())
    for _ in range(50):  # a rebalance: the flow suspended, then resumed
        consumer.suspend_flow.set()
        await asyncio.sleep(0)
        consumer.suspend_flow.clear()
        await consumer._deliver(deliver, MESSAGE)
    await asyncio.sleep(0)  # the cancelled watchers finish
    assert len(asyncio.all_tasks()) == tasks  # three watchers, as after the first delivery


async def test_a_watcher_that_fires_late_leaves_a_delivery_begun_after_the_resume(
    consumer: Any,
) -> None:
    # The flow suspended and resumed before the watcher's callback ran: the delivery that
    # began meanwhile is not given up (wait_first would have raced a fresh wait).
    async def nothing(message: Any) -> None:
        pass

    await consumer._deliver(nothing, MESSAGE)  # watchers made
    await asyncio.sleep(0)  # and waiting
    consumer.suspend_flow.set()
    consumer.suspend_flow.clear()
    callback = Blocked()
    task = await _delivering(consumer, callback)
    for _ in range(5):
        await asyncio.sleep(0)  # the old watcher's callback has run
    assert not task.done() and not callback.cancelled
    callback.go.set()
    await asyncio.wait_for(task, 5)
    assert callback.done


async def test_two_events_firing_together_give_the_delivery_up_once(consumer: Any) -> None:
    callback = Blocked()
    task = await _delivering(consumer, callback)
    consumer.suspend_flow.set()
    consumer._stopped.set()
    await asyncio.wait_for(task, 5)  # given up, not raised as a cancellation from outside
    assert callback.cancelled
    assert task.cancelling() == 0


def test_the_loop_copied_is_fausts_loop_as_installed() -> None:
    # deliver.py copies Faust's _drain_messages (faust-streaming 0.15.3): a Faust whose
    # loop differs must be compared with the copy before it is let in.
    source = inspect.getsource(Consumer._drain_messages)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == "44a2500309e83c63"
