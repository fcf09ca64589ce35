"""Read the pilot's metrics from Kafka with nothing but the Avro schemas in this repository.

    python examples/consume_pilot_metrics.py localhost:9092 appfirst.pilot-metrics

Records are Avro single-object encoded: two marker bytes (C3 01), the writer schema's
8-byte CRC-64-AVRO fingerprint (little-endian), then the Avro body. The latest record per
key is the current value (the topic is compacted). Needs: aiokafka, fastavro.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMAS = Path(__file__).resolve().parent.parent / "topics" / "schemas"


def pilot_metric_schemas() -> tuple[Any, dict[bytes, Any]]:
    """(current schema, every version by fingerprint): old records read with the new one."""
    current = json.loads((SCHEMAS / "pilot_metric.avsc").read_text())
    versions = [current] + [
        json.loads(p.read_text()) for p in sorted((SCHEMAS / "history").glob("pilot_metric.v*"))
    ]
    by_fp = {
        bytes.fromhex(fingerprint(to_parsing_canonical_form(v), "CRC-64-AVRO")): parse_schema(v)
        for v in versions
    }
    return parse_schema(current), by_fp


def decode(value: bytes, reader: Any, writers: dict[bytes, Any]) -> dict[str, Any]:
    if value[:2] != b"\xc3\x01":
        return dict(json.loads(value))  # the topic may be JSON (APPFIRST_CODEC=json)
    writer = writers[value[2:10]]
    return dict(schemaless_reader(io.BytesIO(value[10:]), writer, reader))


async def latest_metrics(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    reader, writers = pilot_metric_schemas()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        latest: dict[str, dict[str, Any]] = {}
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for r in records:
                    latest[r.key.decode()] = decode(r.value, reader, writers)
        return latest
    finally:
        await consumer.stop()


if __name__ == "__main__":
    metrics = asyncio.run(latest_metrics(sys.argv[1], sys.argv[2]))
    for key, m in sorted(metrics.items()):
        if m["kind"] == "comparison" and m["difference"] is not None:
            print(
                f"{key}: difference {m['difference']:+.3f} "
                f"(95% CI {m['ci_low']:+.3f} to {m['ci_high']:+.3f}), p = {m['p_value']:.3g}"
            )
