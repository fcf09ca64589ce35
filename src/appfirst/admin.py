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


async def ensure_topics(settings: Settings, *, attempts: int = 30) -> list[str]:
    """Create every catalogue topic that does not exist yet; returns the names created."""
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
        existing = set(await admin.list_topics())
        missing = [t for t in wanted_topics(settings) if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.info("topics created concurrently by another process")
        return [t.name for t in missing]
    finally:
        await admin.close()
