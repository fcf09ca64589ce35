"""Topic creation from the catalogue, for the embedded broker and for Apache Kafka."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from appfirst.settings import Settings
from appfirst.topics.catalogue import CATALOGUE, INTERNAL_TOPICS

log = logging.getLogger(__name__)


def wanted_topics(settings: Settings) -> list[NewTopic]:
    rf = settings.replication_factor
    topics = [
        NewTopic(settings.topic(spec.name), settings.partitions, rf, topic_configs=spec.config())
        for spec in CATALOGUE
    ]
    topics += [
        NewTopic(
            settings.topic(name),
            settings.partitions,
            rf,
            topic_configs={"cleanup.policy": retention},
        )
        for name, retention in INTERNAL_TOPICS.items()
    ]
    return topics


class PartitionMismatch(RuntimeError):
    """A topic exists with another partition count than ``APPFIRST_PARTITIONS``."""


async def ensure_topics(settings: Settings, *, attempts: int = 30) -> list[str]:
    """Create every catalogue topic that does not exist yet; returns the names created.

    Raises ``PartitionMismatch`` if one exists with another partition count than
    ``APPFIRST_PARTITIONS``: every join and every record placed by partition (the pilot's
    facts) needs a key to land on the same partition number everywhere, and a worker
    that started anyway would route, count or crash on the wrong partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    for attempt in range(attempts):
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    try:
        wanted = wanted_topics(settings)
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.info("topics created concurrently by another process")
        present = [t.name for t in wanted if t.name in existing]
        wrong = {
            topic["topic"]: len(topic["partitions"])
            for topic in (await admin.describe_topics(present) if present else [])
            if topic["partitions"] and len(topic["partitions"]) != settings.partitions
        }
        if wrong:
            counts = ", ".join(f"{name} has {n}" for name, n in sorted(wrong.items()))
            raise PartitionMismatch(
                f"APPFIRST_PARTITIONS is {settings.partitions}, but {counts} partitions: "
                "set it to the topics' count (or recreate the topics)"
            )
        return [t.name for t in missing]
    finally:
        await admin.close()
