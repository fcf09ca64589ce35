"""Kafka plumbing for the batch jobs: publish events in the configured codec, and read what
a topic already holds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from appfirst.codecs import Decoder, Encoder
from appfirst.errors import DecodeError
from appfirst.settings import Settings
from appfirst.topics.models import Event

E = TypeVar("E", bound=Event)


async def publish(settings: Settings, topic: str, events: Iterable[tuple[str, Event]]) -> int:
    """Send (key, event) pairs to a contract topic and wait until all are acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    encoders: dict[type[Event], Encoder[Event]] = {}
    pending = []
    try:
        for key, event in events:
            enc = encoders.setdefault(type(event), Encoder(type(event), settings.codec))
            pending.append(
                await producer.send(settings.topic(topic), enc.encode(event), key=key.encode())
            )
        # Each write's own result: a failed one raises here, not silently in flush().
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return len(pending)


async def read_all(settings: Settings, topic: str, model: type[E], since_ms: int | None) -> list[E]:
    """Every record of ``topic`` written since ``since_ms`` (all if None or if the broker
    cannot look up offsets by time), up to the end offsets at the start of the read."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    found: list[E] = []
    decoder = Decoder(model)
    try:
        full = settings.topic(topic)
        parts = consumer.partitions_for_topic(full)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(full) or set()
        tps = [TopicPartition(full, p) for p in sorted(parts)]
        if not tps:
            return found
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        if since_ms is not None:
            try:
                starts = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
                for tp, start in starts.items():
                    if start is not None:
                        consumer.seek(tp, start.offset)
            except Exception:
                await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500, max_records=10_000)
            for records in batches.values():
                for record in records:
                    try:
                        found.append(decoder.decode(record.value))
                    except DecodeError:
                        continue  # dead-letter's business, not ours
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return found
