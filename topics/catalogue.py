"""The topic catalogue: every topic of the contract, plus the internal ones we add.

Keyed topics that are joined share one partition count (``APPFIRST_PARTITIONS``) so that a
key lands on the same partition number everywhere (co-partitioning, as Faust requires).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from aiokafka.partitioner import DefaultPartitioner

from appfirst.topics import models

Retention = Literal["delete", "compact"]


@dataclass(frozen=True)
class TopicSpec:
    name: str  # contract name, without the prefix
    key: str
    model: type[models.Event]
    retention: Retention
    written_by: str
    read_by: str
    retention_ms: int | None = None  # for delete topics; None = broker default

    def config(self) -> dict[str, str]:
        cfg: dict[str, str] = {"cleanup.policy": self.retention}
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


_WEEK_MS = 7 * 24 * 3600 * 1000

CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec(
        "send-requests",
        "message_id",
        models.SendRequest,
        "delete",
        "upstream systems",
        "router",
        4 * _WEEK_MS,
    ),
    TopicSpec(
        "practice-settings",
        "ods_code",
        models.PracticeSettings,
        "compact",
        "practice admin / upstream",
        "router, metrics",
    ),
    TopicSpec(
        "eligibility",
        "nhs_number",
        models.Eligibility,
        "compact",
        "eligibility sync, upstream",
        "router",
    ),
    TopicSpec(
        "dispatches",
        "message_id",
        models.Dispatch,
        "delete",
        "router",
        "dispatcher, tracker, metrics",
        4 * _WEEK_MS,
    ),
    TopicSpec(
        "delivery-receipts",
        "message_id",
        models.DeliveryReceipt,
        "delete",
        "provider callback ingress",
        "tracker, metrics",
        4 * _WEEK_MS,
    ),
    TopicSpec(
        "read-receipts",
        "message_id",
        models.ReadReceipt,
        "delete",
        "provider callback ingress",
        "tracker, metrics",
        4 * _WEEK_MS,
    ),
    TopicSpec(
        "responses",
        "message_id",
        models.Response,
        "delete",
        "patient response service",
        "metrics",
        4 * _WEEK_MS,
    ),
    TopicSpec(
        "fallbacks",
        "message_id",
        models.Fallback,
        "delete",
        "tracker",
        "dispatcher, metrics",
        4 * _WEEK_MS,
    ),
    TopicSpec(
        "batches",
        "batch_id",
        models.BatchEvent,
        "delete",
        "batch upload (appfirst batch send, POST /batches), practice front end",
        "batches",
        4 * _WEEK_MS,
    ),
    TopicSpec(
        "batch-status",
        "batch_id",
        models.BatchStatus,
        "compact",
        "batches",
        "practice front end, link service",
    ),
    TopicSpec(
        "message-status",
        "message_id",
        models.MessageStatus,
        "compact",
        "status",
        "practice front end (conversation threads)",
    ),
    TopicSpec("pilot-metrics", "metric key", models.PilotMetric, "compact", "metrics", "analysts"),
    TopicSpec(
        "dead-letter",
        "key of the rejected record",
        models.DeadLetter,
        "delete",
        "any agent",
        "operators",
        4 * _WEEK_MS,
    ),
)

BY_NAME: dict[str, TopicSpec] = {spec.name: spec for spec in CATALOGUE}

# Internal topics (not part of the contract): repartitions between agents.
ROUTER_BY_PATIENT = "router-by-patient"  # send requests re-keyed by nhs_number
METRIC_FACTS = "metric-facts"  # per-message facts placed by arm, message type and practice
FACTS_PER_RECORD = 1000  # the most facts a metric-facts record holds: about 140 KB of JSON
FAILED_NUMBERS = "failed-numbers"  # SMS failures keyed by the number's keyed hash
PRACTICE_STATS = "practice-stats"  # each practice's matured counts, keyed by message type
SEND_OUTCOMES = "send-outcomes"  # when a provider accepted a message's own send
BATCH_PROGRESS = "batch-progress"  # each batch message's outcome, keyed by batch id
INTERNAL_TOPICS: dict[str, Retention] = {
    SEND_OUTCOMES: "delete",
    BATCH_PROGRESS: "delete",
    ROUTER_BY_PATIENT: "delete",
    METRIC_FACTS: "delete",
    PRACTICE_STATS: "delete",
    FAILED_NUMBERS: "compact",  # the latest failure per number, kept past any retention
}


def spec(name: str) -> TopicSpec:
    return BY_NAME[name]


@lru_cache(maxsize=2**16)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``partitions`` that a record keyed ``key`` lands on: the producer's
    default partitioner's (murmur2, as Kafka's Java client), for a record that carries
    the work of several keys and must land where each would."""
    return int(DefaultPartitioner()(key, list(range(partitions)), []))
