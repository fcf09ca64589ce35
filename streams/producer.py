"""Faust's producer, with a buffer that can say when everything written has left it.

Table writes go to the changelog through Faust's producer buffer (``send_soon``), which a
task hands to aiokafka one record at a time. Faust's own ``flush`` gives up as soon as no
record has left the buffer for 0.1 s (``ProducerBuffer.flush_atmost``), and on a starved
loop it returns with records still queued: a decision written to ``routed`` would then not
be durable when ``durable()`` returns, and the dispatch sent after it could reach Kafka
first. ``drain`` waits until the buffer is empty and its task holds no record, then
flushes aiokafka, which waits for every record handed to it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.drivers import aiokafka as driver
from faust.transport.producer import ProducerBuffer

# Between two looks at a buffer that is not empty yet: its task needs the loop to run.
DRAIN_POLL_SECONDS = 0.01


class DrainableBuffer(ProducerBuffer):
    """Counts the record its task has taken from the queue but not yet handed to aiokafka
    (``size`` counts only the queue)."""

    in_flight = 0

    async def _send_pending(self, fut: Any) -> None:
        # Runs from the moment the task takes the record, before any await.
        self.in_flight += 1
        try:
            await super()._send_pending(fut)
        finally:
            self.in_flight -= 1

    @property
    def drained(self) -> bool:
        return self.size == 0 and self.in_flight == 0


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
    while not buffer.drained:
        await buffer.flush()
        if not buffer.drained:
            await asyncio.sleep(DRAIN_POLL_SECONDS)
    await producer.flush()
