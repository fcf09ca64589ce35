"""Faust's Python stream iterator, without a turn of the event loop for every event.

Faust's ``Stream._py_aiter`` hands each event to the agent after ``await sleep(0)``, so
that a stream whose queue is never empty (``get_nowait`` never waits) still lets the loop
run. Once an event: a task step and a pass of the loop for every event of every stream,
and around each processor (a batching stream has one) a tracing context built from an
f-string even with no tracer. Measured on the bench's pipeline, a tenth of the worker's
CPU (docs/performance.md).

``LeanIteration.lean_aiter`` is that iterator (faust-streaming 0.15), line for line,
except that it lets the loop run once every ``YIELD_EVERY`` events taken without waiting
(as Faust's consumer loop does every 100 records) and builds the tracing context only
when the app has a tracer. ``AckedStream`` (``streams/rewind.py``) iterates with it: it
keeps Faust's Python iterator for its acknowledgements, and what it acknowledges, skips
and counts is unchanged.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from faust.exceptions import Skip
from faust.streams import _current_event
from faust.types import ChannelT, EventT
from mode import shortlabel
from mode.utils.futures import maybe_async

# Events taken from a queue that had them, between two turns of the loop: at about 0.1 ms
# an event, a few milliseconds at most that other tasks (the fallback sweep) wait.
YIELD_EVERY = 32


class LeanIteration:
    """A mixin for ``faust.Stream``."""

    async def lean_aiter(self) -> AsyncIterator[Any]:  # pragma: no cover - Faust's
        me = cast(Any, self)
        me._finalized = True
        started_by_aiter = await me.maybe_start()
        on_merge = me.on_merge
        on_stream_event_out = me._on_stream_event_out
        on_message_out = me._on_message_out

        # get from channel
        channel = me.channel
        chan_is_channel = isinstance(channel, ChannelT)
        if chan_is_channel:
            chan_queue = channel.queue
            chan_queue_empty = chan_queue.empty
            chan_errors = chan_queue._errors
            chan_quick_get = chan_queue.get_nowait
        else:
            chan_queue_empty = cast(Callable[[], bool], None)
            chan_errors = None
            chan_quick_get = cast(Callable[[], Any], None)
        chan_slow_get = channel.__anext__
        # Topic description -> processors
        processors = me._processors
        # Sensor: on_stream_event_in
        on_stream_event_in = me._on_stream_event_in

        # localize global variables
        create_ref = weakref.ref
        _maybe_async = maybe_async
        event_cls = EventT
        _current_event_contextvar = _current_event

        consumer = me.app.consumer
        unacked = consumer.unacked
        add_unacked = unacked.add
        acking_topics = me.app.topics.acking_topics
        on_message_in = me._on_message_in
        sleep = asyncio.sleep
        app = me.app
        sensor_state: dict[Any, Any] | None = None
        skipped_value = me._skipped_value
        taken_without_waiting = 0  # ours: events since the loop last ran

        try:
            while not me.should_stop:
                event = None
                do_ack = me.enable_acks  # set to False to not ack event.
                # wait for next message
                value: Any = None
                # we iterate until on_merge gives value.
                while value is None and event is None:
                    # get message from channel
                    # This inlines ThrowableQueue.get for performance:
                    # We selectively call `await Q.put`/`Q.put_nowait`,
                    # and prefer the latter if the queue is non-empty.
                    channel_value: Any
                    if chan_is_channel:
                        if chan_errors:
                            raise chan_errors.popleft()
                        if chan_queue_empty():
                            taken_without_waiting = 0  # ours: the get below waits
                            channel_value = await chan_slow_get()
                        else:
                            # Ours: Faust lets the loop run before every event.
                            taken_without_waiting += 1
                            if taken_without_waiting >= YIELD_EVERY:
                                taken_without_waiting = 0
                                await sleep(0)
                                if chan_errors:
                                    raise chan_errors.popleft()
                                if chan_queue_empty():
                                    continue  # taken by no one else; but wait for the next
                            channel_value = chan_quick_get()
                    else:
                        # chan is an AsyncIterable
                        await sleep(0)
                        channel_value = await chan_slow_get()

                    if isinstance(channel_value, event_cls):
                        event = channel_value
                        message = event.message
                        topic = message.topic
                        tp = message.tp
                        offset = message.offset

                        if (
                            not app.flow_control.is_active()
                            or message.generation_id != app.consumer_generation_id
                        ):
                            value = skipped_value
                            me.log.dev(
                                "Skipping message %r with generation_id %r because "
                                "app generation_id is %r flow_control.is_active %r",
                                message,
                                message.generation_id,
                                app.consumer_generation_id,
                                app.flow_control.is_active(),
                            )
                            break
                        if topic in acking_topics and not message.tracked:
                            message.tracked = True
                            # This inlines Consumer.track_message(message)
                            add_unacked(message)
                            on_message_in(message.tp, message.offset, message)

                        # call Sensors
                        sensor_state = on_stream_event_in(tp, offset, me, event)

                        # set task-local current_event
                        _current_event_contextvar.set(create_ref(event))
                        # set Stream._current_event
                        me.current_event = event

                        # Stream yields Event.value
                        value = event.value
                    else:
                        value = channel_value
                        me.current_event = None
                        sensor_state = None

                    # reduce using processors
                    try:
                        for processor in processors:
                            if app.tracer is None:  # ours: no tracing context to build
                                value = await _maybe_async(processor(value))
                            else:
                                with app.trace(f"processor-{shortlabel(processor)}"):
                                    value = await _maybe_async(processor(value))
                        value = await on_merge(value)
                    except Skip:
                        # We want to ack the filtered message
                        # otherwise the lag would increase
                        value = skipped_value

                try:
                    if value is not skipped_value:
                        me.events_total += 1
                        yield value
                finally:
                    me.current_event = None
                    # We want to ack the filtered out message
                    # otherwise the lag would increase
                    if event is not None and (do_ack or value is skipped_value):
                        # This inlines self.ack
                        last_stream_to_ack = event.ack()
                        message = event.message
                        tp = event.message.tp
                        offset = event.message.offset
                        on_stream_event_out(tp, offset, me, event, sensor_state)
                        if last_stream_to_ack:
                            on_message_out(tp, offset, message)

        except StopAsyncIteration:
            # We are not allowed to propagate StopAsyncIteration in __aiter__
            # (if we do, it'll be converted to RuntimeError by CPython).
            return
        finally:
            me._channel_stop_iteration(channel)
            if started_by_aiter:
                # if `async for` called Stream.start()
                # we need to stop it before ending iteration.
                await me.stop()
                # reset to allow calling .start again on next `async for`
                me.service_reset()
