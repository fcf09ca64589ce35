"""Faust's producer, with a buffer that can say when what was written before a moment has
left it.

Table writes go to the changelog through Faust's producer buffer (``send_soon``), which a
task hands to aiokafka one record at a time, in order. Faust's own ``flush`` gives up as
soon as no record has left the buffer for 0.1 s (``ProducerBuffer.flush_atmost``), so on a
starved loop it returns with records still queued: a decision written to ``routed`` would
then not be durable when ``durable()`` returns, and the dispatch sent after it could reach
Kafka first. ``drain`` waits until every record put before it was called has been handed to
aiokafka, then flushes aiokafka, which waits for every record handed to it. Records other
agents write meanwhile are not waited for.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.drivers import aiokafka as driver
from faust.transport.producer import ProducerBuffer


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
        # Not on failure: the buffer's task then ends, and whoever drains times out.
        self.handed += 1
        self.handed_one.set()

    async def handed_up_to(self, mark: int) -> None:
        """Until the first ``mark`` records put have been handed to aiokafka."""
        while self.handed < mark:
            self.handed_one.clear()
            await self.handed_one.wait()


class DrainableProducer(driver.Producer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Replaced before the producer starts, which is when the buffer becomes its
        # dependency and its task starts.
        buffer = DrainableBuffer(loop=self.loop, beacon=self.beacon)
        buffer.app = self.app
        self.buffer = buffer


async def drain(producer: Any) -> None:
    """Every record written so far (table writes included) acknowledged by the broker."""
    buffer = producer.buffer
    await buffer.handed_up_to(buffer.queued)
    # aiokafka's own producer (Faust's ``flush`` would also wait on the buffer, for the
    # records other agents write meanwhile).
    kafka = producer._producer
    if kafka is not None:
        await kafka.flush()
