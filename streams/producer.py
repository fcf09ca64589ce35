"""Faust's producer, whose flush returns only once what was written before it has left
Faust's buffer.

Table writes go to the changelog through Faust's producer buffer (``send_soon``), which a
task hands to aiokafka one record at a time, in order. Faust's own flush gives up as soon
as no record has left the buffer for 0.1 s (``ProducerBuffer.flush_atmost``), so on a
starved loop it returns with records still queued. Faust flushes before it commits
offsets, and ``durable()`` flushes before a decision is acted on: either could then run
ahead of a table write, and a crash would lose the write (a deadline, a routing decision)
while its event is never read again. ``DrainableProducer.flush`` first waits until every
record put in the buffer before it was called has been handed to aiokafka, then flushes
aiokafka, which waits for every record handed to it. It does not wait for records written
after it was called: Faust's buffer flush does, as long as they keep coming.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any, NoReturn, cast

from faust.transport.drivers import aiokafka as driver
from faust.transport.producer import ProducerBuffer
from faust.types.enums import ProcessingGuarantee

# How often a wait on a stopping buffer looks again: its task hands nothing on once it stops.
STOP_CHECK_SECONDS = 0.5
# As long as durable() waits (streams/io.py): a buffer that hands nothing on for that long
# has a broker that takes no writes. The worker exits crash-only (code 70, as an agent that
# fails) rather than let Faust commit offsets past writes still in the buffer.
HAND_ON_LIMIT_SECONDS = 45.0
EXIT_CRASH_ONLY = 70
_log = logging.getLogger("appfirst.streams")


class DrainableBuffer(ProducerBuffer):
    """Numbers the records put and those handed on: both in queue order."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.queued = 0  # records put, ever
        self.handed = 0  # records handed to aiokafka, ever
        self.handed_one = asyncio.Event()

    def put(self, fut: Any) -> None:
        super().put(fut)
        self.queued += 1

    async def _send_pending(self, fut: Any) -> None:
        await super()._send_pending(fut)
        # Not on failure: the buffer's task then ends (the flush sees it crashed).
        self.handed += 1
        self.handed_one.set()

    async def handed_up_to(self, mark: int) -> None:
        """Until the first ``mark`` records put have been handed to aiokafka, or the buffer
        is stopping."""
        while self.handed < mark and not self.should_stop:
            self.handed_one.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.handed_one.wait(), STOP_CHECK_SECONDS)


class DrainableProducer(driver.Producer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The buffer's records are numbered where its own task hands them on; a threaded
        # producer hands them on elsewhere, and every flush would wait for nothing.
        if self.app.conf.producer_threaded:
            raise RuntimeError("producer_threaded is not supported: see streams/producer.py")
        # send_record hands records to the plain aiokafka producer, outside any transaction.
        if cast(Any, self.app.conf).processing_guarantee == ProcessingGuarantee.EXACTLY_ONCE:
            raise RuntimeError("exactly_once is not supported: see send_record")
        # Replaced before the producer starts, which is when the buffer becomes its
        # dependency and its task starts.
        self.drainable = DrainableBuffer(loop=self.loop, beacon=self.beacon)
        self.drainable.app = self.app
        self.buffer = self.drainable
        self.undelivered = 0  # records aiokafka gave up on, ever

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        pending: Any = await super().send(*args, **kwargs)  # aiokafka's asyncio future
        pending.add_done_callback(self._delivered)
        return pending

    async def send_record(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None
    ) -> asyncio.Future[Any]:
        """One record handed straight to aiokafka: its delivery future, counted by
        ``flush`` as ``send``'s are.

        Faust's ``Topic.send`` wraps each record in a promise, a pending message, sensor
        calls and callbacks before it reaches this same aiokafka call: measured, 85 us a
        record, half of what plain Faust spends carrying the pipeline's records over its
        hops (docs/performance.md). Same producer, same partitioner (aiokafka's, by key, as
        Faust's and Kafka's clients choose), same order among sends."""
        if self._producer is None:
            await self.maybe_start()  # as Faust's send does: a record sent before the worker
        pending: asyncio.Future[Any] = await self._ensure_producer().send(
            topic, value, key=key, partition=partition
        )
        pending.add_done_callback(self._delivered)
        return pending

    def _delivered(self, pending: Any) -> None:
        if pending.cancelled() or pending.exception() is not None:
            self.undelivered += 1

    async def flush(self) -> None:
        """Returns once every record written before it is acknowledged by the broker; exits
        the worker crash-only (before any offset is committed past it) if one cannot be."""
        for hold in cast(Any, self.app).before_flush:  # rows a table holds back to batch
            hold()
        buffer = self.drainable
        mark = buffer.queued
        try:
            await asyncio.wait_for(buffer.handed_up_to(mark), HAND_ON_LIMIT_SECONDS)
        except TimeoutError:
            _exit(f"table writes not handed to the broker in {HAND_ON_LIMIT_SECONDS:.0f} s")
        if buffer.handed < mark and buffer.state == "crashed":
            # Its task failed handing a record on: the rest will never leave it.
            _exit("the producer buffer failed with table writes still in it")
        # aiokafka's flush waits for the batches it holds now. Faust's own flush would first
        # flush its buffer, which waits until the buffer is empty or 0.1 s passes with
        # nothing handed on: under other agents' steady writes that is never, and a
        # router's flush waited over two minutes so on a busy worker.
        if self._producer is not None:
            await self._producer.flush()
        for transactions in self._transaction_producers.values():
            await transactions.flush()
        await asyncio.sleep(0)  # the records' own futures' callbacks (_delivered) run
        if self.undelivered:
            # aiokafka's flush does not raise for a batch it gave up on (after its retries):
            # a table write or an output lost, whose event must be read again.
            _exit(f"{self.undelivered} records not delivered to the broker")


def _exit(reason: str) -> NoReturn:
    _log.critical("%s: exiting before any offset is committed past them", reason)
    os._exit(EXIT_CRASH_ONLY)
