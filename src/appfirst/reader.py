"""Read whole topics back from Kafka (no consumer group): for the demo summary and tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from appfirst.codecs import Decoder
from appfirst.settings import Settings
from appfirst.topics.catalogue import spec
from appfirst.topics.models import Event

E = TypeVar("E", bound=Event)


class TopicReader:
    """Follows contract topics from the beginning and decodes what it reads."""

    def __init__(self, settings: Settings, names: list[str]) -> None:
        self.settings = settings
        self.names = names
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap, enable_auto_commit=False, group_id=None
        )
        self._decoders = {settings.topic(n): Decoder(spec(n).model) for n in names}

    async def start(self) -> None:
        await self._consumer.start()
        tps = []
        for name in self.names:
            full = self.settings.topic(name)
            parts = None
            for _ in range(100):
                parts = self._consumer.partitions_for_topic(full)
                if parts:
                    break
                await self._consumer._client.force_metadata_update()  # topic may be new
                await asyncio.sleep(0.1)
            tps += [TopicPartition(full, p) for p in sorted(parts or ())]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def poll(self, timeout: float = 0.2) -> AsyncIterator[tuple[str, Event]]:
        batches = await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=5000)
        for tp, records in batches.items():
            name = tp.topic.removeprefix(self.settings.topic_prefix)
            for record in records:
                yield name, self._decoders[tp.topic].decode(record.value)


async def read_until(
    settings: Settings,
    names: list[str],
    done: Callable[[list[tuple[str, Event]]], bool],
    timeout: float,
    *,
    stall: float | None = None,
) -> list[tuple[str, Event]]:
    """Everything on ``names`` once ``done(records)`` holds, or when ``timeout`` passes, or
    (with ``stall``) when no record has come for that long: records still arriving slowly
    on a starved machine are then told apart from records that stopped."""
    reader = TopicReader(settings, names)
    await reader.start()
    seen: list[tuple[str, Event]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = loop.time()
    try:
        while loop.time() < deadline:
            before = len(seen)
            async for item in reader.poll():
                seen.append(item)
            if done(seen):
                break
            if len(seen) > before:
                last = loop.time()
            elif stall is not None and loop.time() - last > stall:
                break
    finally:
        await reader.stop()
    return seen
