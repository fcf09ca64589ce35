"""Reading a batch back from ``batches``: its review list, for the download."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from appfirst.codecs import Decoder
from appfirst.errors import DecodeError
from appfirst.rules.batch import REASONS
from appfirst.settings import Settings
from appfirst.topics.models import BatchEvent


async def non_contactable(settings: Settings, batch_id: str) -> list[tuple[str, ...]] | None:
    """The batch's rows that cannot be contacted, as the download lists them, or None if
    the batch has no plan on the topic. Reads only the batch's own partition (its key's),
    from the start of the topic's retention."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    decoder = Decoder(BatchEvent)
    rows: list[tuple[str, ...]] = []
    planned = False
    try:
        topic = settings.topic("batches")
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            return None
        key = batch_id.encode()
        tp = TopicPartition(topic, DefaultPartitioner()(key, partitions, partitions))
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        # Reading from the start to the listed end fetches the last batch whole, so no
        # record is missed even where the listed end trails the true one (Tansu).
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                if record.key != key:
                    continue
                try:
                    event = decoder.decode(record.value)
                except DecodeError:
                    continue
                if event.kind == "plan":
                    planned = True
                elif event.kind == "non_contactable" and event.reason is not None:
                    rows.append(
                        (
                            str(event.line),
                            event.nhs_number or "",
                            event.name or "",
                            event.date_of_birth or "",
                            REASONS[event.reason],
                        )
                    )
    finally:
        await consumer.stop()
    return rows if planned else None
