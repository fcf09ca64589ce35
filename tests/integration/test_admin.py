"""``appfirst topics`` and a worker's start (``admin.ensure_topics``) on the embedded broker:
topics are created once, and a worker refuses to start against topics of another partition
count than ``APPFIRST_PARTITIONS`` (co-partitioning, and the pilot's facts placed by
partition, depend on it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from appfirst.admin import PartitionMismatch, ensure_topics, wanted_topics
from appfirst.broker import EmbeddedBroker
from appfirst.settings import settings_from_env

pytestmark = pytest.mark.integration


async def test_topics_are_made_once_and_another_partition_count_is_refused(
    broker: EmbeddedBroker,
) -> None:
    two = settings_from_env(
        {
            "APPFIRST_BROKER": broker.url,
            "APPFIRST_TOPIC_PREFIX": "admin.",
            "APPFIRST_PARTITIONS": "2",
        }
    )
    created = await ensure_topics(two)
    assert sorted(created) == sorted(t.name for t in wanted_topics(two))
    assert await ensure_topics(two) == []  # all there, all of two partitions

    three = two.model_copy(update={"partitions": 3})
    with pytest.raises(PartitionMismatch) as refused:
        await ensure_topics(three)
    message = str(refused.value)
    assert "APPFIRST_PARTITIONS is 3" in message
    assert "admin.metric-facts has 2" in message and "admin.dispatches has 2" in message


def test_the_topics_command_says_which_topics_differ(broker: EmbeddedBroker) -> None:
    env = {
        **os.environ,
        "APPFIRST_BROKER": broker.url,
        "APPFIRST_TOPIC_PREFIX": "admin-cli.",
        "APPFIRST_PARTITIONS": "2",
    }
    command = [sys.executable, "-m", "appfirst", "topics"]
    made = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    refused = subprocess.run(
        command, env={**env, "APPFIRST_PARTITIONS": "3"}, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1
    assert "Error: APPFIRST_PARTITIONS is 3, but admin-cli." in refused.stderr
    assert "Traceback" not in refused.stderr
