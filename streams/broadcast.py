"""Small tables every worker holds whole: read from a compacted topic by each process.

This is the Kafka Streams ``GlobalKTable`` idea done plainly: each worker runs its own
consumer outside the group, reads every partition from the beginning and keeps going. It
replaces Faust's ``GlobalTable``, which on this stack left a second worker without updates
written after it started (and warns of recovery loops with several instances).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from appfirst.settings import Settings

log = logging.getLogger("appfirst.streams")
V = TypeVar("V")

# key, value -> the value to keep, or None to ignore the record
Apply = Callable[[str, bytes, "V | None"], "V | None"]


class BroadcastTable(Generic[V]):
    def __init__(self, settings: Settings, topic: str, apply: Apply[V]) -> None:
        self.settings = settings
        self.topic = topic
        self._apply = apply
        self._data: dict[str, V] = {}
        self.ready = asyncio.Event()

    def get(self, key: str) -> V | None:
        return self._data.get(key)

    def __len__(self) -> int:
        return len(self._data)

    async def run(self) -> None:
        """Follow the topic forever; ``ready`` is set once the start's backlog is read."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps = await self._partitions(consumer)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for records in batches.values():
                    for record in records:
                        self._record(record.key, record.value)
                if not self.ready.is_set() and all(
                    await asyncio.gather(*(self._reached(consumer, tp, ends[tp]) for tp in tps))
                ):
                    self.ready.set()
                    log.info("broadcast table %s loaded: %d keys", self.topic, len(self))
        finally:
            await consumer.stop()

    @staticmethod
    async def _reached(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
        return bool(await consumer.position(tp) >= end)

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        for _ in range(100):
            parts = consumer.partitions_for_topic(self.topic)
            if parts:
                return [TopicPartition(self.topic, p) for p in sorted(parts)]
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {self.topic} not found")

    def _record(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        name = key.decode("utf-8", "replace")
        if value is None:  # a tombstone
            self._data.pop(name, None)
            return
        kept = self._apply(name, value, self._data.get(name))
        if kept is not None:
            self._data[name] = kept
