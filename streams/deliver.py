"""Faust's consumer loop, handing each record to the streams without four tasks a record.

Faust's ``Consumer._drain_messages`` hands each fetched record to the conductor with
``await self.wait_first(callback(message), self.suspend_flow.wait())``. ``wait_first``
makes a task of the delivery, one of each of the flow's suspension, the consumer's stop
and its crash, waits for the first, and cancels the other three: four tasks and three
cancellations a record, whatever the record. Measured on the bench's pipeline, a tenth of
the worker's CPU (docs/performance.md).

``InlineDelivery`` keeps what that buys and drops the cost. The delivery runs in the
loop's own task; a watcher on each of the three events, made once and again only after its
event has fired, cancels a delivery under way when one fires, as ``wait_first`` cancels
its delivery task; the loop then goes on as Faust's does. When one of the events is
already set, the record goes through ``wait_first`` as before. The rest of the loop is
Faust's (faust-streaming 0.15), line for line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING


class InlineDelivery:
    """A mixin for Faust's ``Consumer``: its ``_drain_messages`` delivers inline."""

    _delivering: asyncio.Task[Any] | None = None
    _interrupted: bool = False
    _watchers: list[asyncio.Future[Any]] = []  # noqa: RUF012 - replaced, never changed
    _stale = True  # the watchers are to be made again before the next delivery

    def _flow_events(self) -> tuple[Any, Any, Any]:
        me = cast(Any, self)
        return (me.suspend_flow, me._stopped, me._crashed)

    def _watch(self) -> None:
        self._stop_watching()
        watchers = []
        for event in self._flow_events():
            watcher = asyncio.ensure_future(event.wait())
            watcher.add_done_callback(self._interrupt)
            watchers.append(watcher)
        self._watchers = watchers
        self._stale = False

    def _interrupt(self, watcher: asyncio.Future[Any]) -> None:
        if watcher.cancelled() or watcher not in self._watchers:
            return
        self._stale = True  # its event fired: all three made again before the next delivery
        # A watcher's callback runs a turn or two after its event fired: by then the flow
        # may have resumed and a new delivery begun, which wait_first would not give up.
        # And two events firing together cancel once, or the second would look like a
        # cancellation from outside.
        if (
            self._delivering is not None
            and not self._interrupted
            and any(event.is_set() for event in self._flow_events())
        ):
            self._interrupted = True
            self._delivering.cancel()

    def _stop_watching(self) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        self._watchers = []
        self._stale = True

    async def _deliver(
        self, callback: Any, message: Any, task: asyncio.Task[Any] | None = None
    ) -> None:
        """``wait_first(callback(message), suspend_flow.wait())``, as Faust's loop has it;
        ``task`` is the loop's own (the current task)."""
        me = cast(Any, self)
        suspended, stopped, crashed = self._flow_events()
        if suspended.is_set() or stopped.is_set() or crashed.is_set():
            await me.wait_first(callback(message), suspended.wait())
            return
        if self._stale:
            self._watch()
        if task is None:
            task = asyncio.current_task()
        self._delivering = task
        try:
            await callback(message)
        except asyncio.CancelledError:
            # Ours (a watcher's) alone: given up, as wait_first gives up its delivery task,
            # and the loop goes on. Anyone else's (a stop cancelling the fetcher) goes on up.
            if not self._interrupted or task is None or task.uncancel() > 0:
                raise
        else:
            if self._interrupted and task is not None:
                task.uncancel()  # the delivery ended without our cancellation reaching it
        finally:
            self._delivering = None
            self._interrupted = False

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's
        me = cast(Any, self)
        callback = me.callback
        getmany = me.getmany
        consumer_should_stop = me._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set

        get_read_offset = me._read_offset.__getitem__
        set_read_offset = me._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = me.diag.set_flag
        unset_flag = me.diag.unset_flag
        commit_every = me._commit_every
        acks_enabled_for = me.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        deliver = self._deliver
        task = asyncio.current_task()

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator[Any], getmany(timeout=1.0))

                # Sleeping because sometimes getmany is called in a loop
                # never releasing to the event loop
                await me.sleep(0)
                if not me.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            # We have a gap in income messages
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await me._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and me._n_acked >= commit_every:
                                me._n_acked = 0
                                await me.commit()
                            await deliver(callback, message, task)
                            set_read_offset(tp, offset)
                        else:
                            me.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    unset_flag(flag_consumer_fetching)

        except me.consumer_stopped_errors:
            if me.transport.app.should_stop:
                # we're already stopping so ignore
                me.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if me.transport.app.should_stop:
                # we're already stopping so ignore
                me.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            me.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)
            self._stop_watching()
