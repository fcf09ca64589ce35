"""The bench's end offsets on the embedded broker: a load written in large batches must
not look consumed before its last batch is (Tansu lists a batch's base offset plus one)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from appfirst.admin import ensure_topics
from appfirst.broker import EmbeddedBroker
from appfirst.settings import settings_from_env
from bench.harness import end_offsets


async def test_end_offsets_are_past_the_last_record_of_a_large_batch(
    broker: EmbeddedBroker,
) -> None:
    settings = settings_from_env(
        {
            "APPFIRST_BROKER": broker.url,
            "APPFIRST_TOPIC_PREFIX": "ends.",
            "APPFIRST_PARTITIONS": "2",
        }
    )
    await ensure_topics(settings)
    topic = settings.topic("send-requests")
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap, linger_ms=50, max_batch_size=1024 * 1024
    )
    await producer.start()
    try:
        sent = [await producer.send(topic, b"x" * 100, key=str(i).encode()) for i in range(3000)]
        written = await asyncio.gather(*sent)
    finally:
        await producer.stop()
    true_ends = {p: max(m.offset for m in written if m.partition == p) + 1 for p in (0, 1)}

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in (0, 1)]
        ends = await end_offsets(consumer, tps)
    finally:
        await consumer.stop()
    assert {tp.partition: end for tp, end in ends.items()} == true_ends
