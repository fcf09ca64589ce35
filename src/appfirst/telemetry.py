"""Prometheus metrics of the worker. No label ever holds a patient or message identifier."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

registry: CollectorRegistry = REGISTRY

records_in = Counter(
    "appfirst_records_in_total",
    "Records read, by topic and outcome",
    ["topic", "outcome"],
    registry=registry,
)
records_out = Counter(
    "appfirst_records_out_total",
    "Records produced, by topic and outcome (ok: acknowledged by the broker; error: failed)",
    ["topic", "outcome"],
    registry=registry,
)
committed_offset = Gauge(
    "appfirst_committed_offset",
    "The group's committed offset (the next record to process) for each partition this "
    "worker owns: a stalled partition is one whose lag is above 0 while this stands still",
    ["topic", "partition"],
    registry=registry,
)
consumer_lag = Gauge(
    "appfirst_consumer_lag",
    "Records not yet committed by this worker's group: end offset minus committed offset, "
    "for the partitions this worker owns",
    ["topic", "partition"],
    registry=registry,
)
dead_letters = Counter(
    "appfirst_dead_letters_total",
    "Records sent to dead-letter",
    ["topic", "agent"],
    registry=registry,
)
dispatches = Counter(
    "appfirst_dispatches_total", "Routing decisions", ["channel", "reason"], registry=registry
)
duplicate_requests = Counter(
    "appfirst_duplicate_requests_total",
    "Send requests seen again for a routed message_id",
    registry=registry,
)
fallbacks = Counter(
    "appfirst_fallbacks_total", "Fallbacks emitted, by reason", ["reason"], registry=registry
)
pending_deadlines = Gauge(
    "appfirst_pending_deadlines",
    "NHS App messages waiting on their fallback deadline",
    registry=registry,
)
table_rows = Gauge(
    "appfirst_table_rows",
    "Rows held in this worker's copy of a per-message table (pending work plus the "
    "settled rows of the keep window)",
    ["table"],
    registry=registry,
)
rows_disk_bytes = Gauge(
    "appfirst_rows_disk_bytes",
    "Bytes in the files of this worker's RocksDB database for a table or index of "
    "per-message rows (APPFIRST_ROW_STORE=disk)",
    ["database"],
    registry=registry,
)
rows_memory_bytes = Gauge(
    "appfirst_rows_memory_bytes",
    "Bytes this worker's RocksDB databases hold in memory: write buffers by database, and "
    'the shared block cache as database="cache" (within APPFIRST_ROW_MEMORY_MB)',
    ["database"],
    registry=registry,
)
rows_deleted = Counter(
    "appfirst_rows_deleted_total",
    "Per-message rows deleted once past their end",
    ["table"],
    registry=registry,
)
fallback_lateness = Histogram(
    "appfirst_fallback_lateness_seconds",
    "Fallback emitted minus due",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
    registry=registry,
)
provider_requests = Counter(
    "appfirst_provider_requests_total",
    "Provider calls by provider and outcome",
    ["provider", "outcome"],
    registry=registry,
)
provider_latency = Histogram(
    "appfirst_provider_request_duration_seconds",
    "Provider call latency",
    ["provider"],
    registry=registry,
)
provider_misconfigured = Gauge(
    "appfirst_provider_misconfigured",
    "1 while a provider refuses our credentials or permissions (token 401, 403)",
    ["provider"],
    registry=registry,
)
nhs_app_given_up = Counter(
    "appfirst_nhs_app_given_up_total",
    "NHS App messages given up and sent to their fallback SMS at once, by reason",
    ["reason"],
    registry=registry,
)
oldest_unsent = Gauge(
    "appfirst_oldest_unsent_seconds",
    "Age of the oldest send this worker holds and has not finished, by lane",
    ["lane"],
    registry=registry,
)
sends_pending = Gauge(
    "appfirst_sends_pending",
    "Sends this worker holds (queued or in flight), by lane",
    ["lane"],
    registry=registry,
)
sends_absorbed = Counter(
    "appfirst_sends_absorbed_total",
    "Dispatches or fallbacks seen again and not re-sent",
    ["kind"],
    registry=registry,
)
fallbacks_undeliverable = Counter(
    "appfirst_fallbacks_undeliverable_total",
    "Fallbacks that could not be sent: the patient has no valid UK mobile",
    registry=registry,
)
eligibility_lookups = Counter(
    "appfirst_eligibility_lookups_total",
    "On-demand eligibility lookups on a cache miss",
    ["outcome"],
    registry=registry,
)
callbacks = Counter(
    "appfirst_callbacks_total",
    "Provider callbacks received",
    ["provider", "outcome"],
    registry=registry,
)


P = TypeVar("P", bound=Hashable)


def lags(
    owned: Iterable[P],
    highwater: Mapping[P, int | None],
    committed: Mapping[P, int | None],
    earliest: Mapping[P, int],
) -> dict[P, int]:
    """Records not yet committed per partition whose end offset is known. Where the group
    has committed nothing it reads from the earliest offset (``auto_offset_reset``), so
    the lag counts from there, not from 0 (retention may have removed the first records).
    """
    result = {}
    for partition in owned:
        end = highwater.get(partition)
        if end is None:
            continue  # not fetched yet: no end offset to compare with
        start = committed.get(partition) or earliest.get(partition, 0)
        result[partition] = max(0, end - start)
    return result
