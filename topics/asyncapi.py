"""An AsyncAPI 3.0 document of every topic, built from the catalogue, for integrators.

``build_document`` is pure: the catalogue, the Avro schemas, the pydantic models and its
arguments decide the result, so ``docs/asyncapi.json`` (built with the defaults) can be
checked for staleness by a test. The application it describes is the ``appfirst worker``:
its operations say which topics the worker reads and which it writes.

Each contract topic carries one message per encoding a record may have on it: JSON (schema
from the pydantic model), Avro single-object and, on topics the worker reads, Confluent wire
format (both with the ``.avsc`` schema). Internal topics carry JSON only: the worker writes
them itself, with ``json.dumps``/``model_dump_json`` whatever ``APPFIRST_CODEC`` says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import version
from typing import Any, Literal

from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from appfirst.rules.pilot import Fact
from appfirst.settings import Settings
from appfirst.topics import models
from appfirst.topics.catalogue import (
    BATCH_PROGRESS,
    CATALOGUE,
    FACTS_PER_RECORD,
    FAILED_NUMBERS,
    INTERNAL_TOPICS,
    METRIC_FACTS,
    PRACTICE_STATS,
    ROUTER_BY_PATIENT,
    SEND_OUTCOMES,
    Retention,
)
from appfirst.topics.schemas import schema_for

ASYNCAPI_VERSION = "3.0.0"
AVRO_SCHEMA_FORMAT = "application/vnd.apache.avro+json;version=1.9.0"
KAFKA_BINDING_VERSION = "0.5.0"
# Avro records are framed binary, not a registered media type: say "bytes" and describe it.
AVRO_CONTENT_TYPE = "application/octet-stream"
JSON_CONTENT_TYPE = "application/json"

DEFAULT_PREFIX: str = Settings.model_fields["topic_prefix"].default
DEFAULT_PARTITIONS: int = Settings.model_fields["partitions"].default
DEFAULT_REPLICAS: int = Settings.model_fields["replication_factor"].default
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

_SCHEMAS = "#/components/schemas/"
_PUBLIC_TAG = {"$ref": "#/components/tags/public"}
_INTERNAL_TAG = {"$ref": "#/components/tags/internal"}

Format = Literal["json", "yaml"]


@dataclass(frozen=True)
class WorkerUse:
    """What the worker does with a topic, read off the agents in ``streams/``."""

    receives: tuple[str, ...] = ()  # agents reading it in the consumer group
    # Parts that read it whole, from the beginning, in every worker process and outside
    # the consumer group (broadcast tables).
    broadcast: tuple[str, ...] = ()
    sends: tuple[str, ...] = ()


# Kept in step with streams/ by tests/unit/topics/test_asyncapi.py, which reads the agents'
# sources: a topic an agent starts or stops reading or writing fails that test.
WORKER: dict[str, WorkerUse] = {
    "send-requests": WorkerUse(
        receives=("router (intake)",), sends=("batches (release, at the schedule's time)",)
    ),
    "practice-settings": WorkerUse(
        receives=("router (validation only)",),
        broadcast=("router (the practice settings it routes by)",),
    ),
    "eligibility": WorkerUse(
        receives=("router (its eligibility table)",),
        sends=("router (results of on-demand eligibility lookups)",),
    ),
    "dispatches": WorkerUse(
        receives=("dispatcher", "messages (and the tracker in it)"),
        sends=("router",),
    ),
    "delivery-receipts": WorkerUse(
        receives=("messages (and the tracker in it)",),
        sends=(
            "callback ingress (POST /callbacks/nhs-app, /callbacks/notify)",
            "dispatcher (a provider's refusal, as a failure receipt)",
        ),
    ),
    "read-receipts": WorkerUse(
        receives=("messages (and the tracker in it)",),
        sends=("callback ingress (POST /callbacks/nhs-app)",),
    ),
    "responses": WorkerUse(
        receives=("messages",), sends=("callback ingress (POST /callbacks/responses)",)
    ),
    "fallbacks": WorkerUse(
        receives=("dispatcher", "messages (and the tracker in it)"), sends=("tracker",)
    ),
    "batches": WorkerUse(
        receives=("batches (collect)",),
        sends=("batch upload (POST /batches), cancel and link revocation endpoints",),
    ),
    "batch-status": WorkerUse(
        sends=("batches (status)",), broadcast=("GET /batches/{id}, GET /links/{id}",)
    ),
    "message-status": WorkerUse(sends=("messages (status)",)),
    "pilot-metrics": WorkerUse(sends=("metrics (publish)",)),
    "dead-letter": WorkerUse(sends=("any agent, for a record it cannot decode or validate",)),
    ROUTER_BY_PATIENT: WorkerUse(receives=("router (route)",), sends=("router (intake)",)),
    METRIC_FACTS: WorkerUse(receives=("metrics (aggregate)",), sends=("messages (pilot facts)",)),
    PRACTICE_STATS: WorkerUse(
        receives=("metrics (collect)",), sends=("metrics (practice snapshots)",)
    ),
    BATCH_PROGRESS: WorkerUse(receives=("batches (collect)",), sends=("messages (status)",)),
    SEND_OUTCOMES: WorkerUse(receives=("messages (and the tracker in it)",), sends=("dispatcher",)),
    FAILED_NUMBERS: WorkerUse(
        broadcast=("router (the likely-to-fail check)",), sends=("messages (contactability)",)
    ),
}

_SUMMARIES: dict[str, str] = {
    "send-requests": "Requests to message a patient: NHS App first, SMS as the safety net.",
    "practice-settings": "Each GP practice's NHS App switch, pilot arm and failure check.",
    "eligibility": "Whether a patient has the NHS App with notifications on.",
    "dispatches": "One routing decision per send request: the channel and why.",
    "delivery-receipts": "Delivery statuses from the NHS App, SMS and email providers.",
    "read-receipts": "The patient read the NHS App message.",
    "responses": "The patient responded to the message.",
    "fallbacks": "An NHS App message to send again by SMS (unread in time, or undeliverable).",
    "batches": "Batch messages: each patient of the list, who cannot be contacted, the plan "
    "(schedule and stagger), cancel, link revocation and saved-to-record events.",
    "batch-status": "Each batch as the practice sees it: Scheduled, Sending, Done or "
    "Cancelled, with its counters and whether its links are revoked.",
    "message-status": "Each message as the practice's conversation thread shows it.",
    "pilot-metrics": "The pilot's statistics: arm rates, the arms compared, daily trend.",
    "dead-letter": "Records that could not be decoded or validated, with the reason. At most "
    "512 KiB of the original (1 KiB of its key) is carried; a longer one is cut and the "
    "reason says so.",
}

# Catalogue keys that are not a field of the topic's event.
# Examples for the topics integrators write; tests/unit/topics/test_asyncapi.py validates
# each against its model, so they cannot drift from what the worker accepts.
_EXAMPLES: dict[str, dict[str, Any]] = {
    "send-requests": {
        "message_id": "req-2024-03-04-000123",
        "requested_at": "2024-03-04T09:30:15.123Z",
        "ods_code": "A81001",
        "organisation_type": "gp",
        "nation": "england",
        "origin": "individual",
        "batch_id": None,
        "message_type": "appointment_reminder",
        "body": "Your appointment is on Tuesday 5 March at 10:40.",
        "patient": {
            "nhs_number": "9434765919",
            "mobile": "07700900123",
            "email": None,
            "deceased": False,
        },
        "email_selected": False,
        "number_overridden": False,
    },
    "practice-settings": {
        "ods_code": "A81001",
        "nhs_app_individual": True,
        "arm": "treatment",
        "likely_to_fail_check": False,
    },
    "eligibility": {
        "nhs_number": "9434765919",
        "has_nhs_app": True,
        "notifications_enabled": True,
        "proxy_only": False,
        "checked_at": "2024-03-04T06:00:00Z",
    },
    "batches": {
        "batch_id": "b-3f9c2a71d04e",
        "kind": "cancel",
        "occurred_at": "2024-03-04T10:15:00Z",
    },
    "responses": {
        "message_id": "req-2024-03-04-000123",
        "responded_at": "2024-03-04T11:02:45Z",
        "attachments": 0,
    },
}

_KEY_NOTES: dict[str, tuple[dict[str, Any], str]] = {
    "metric key": (
        {"type": "string"},
        "The record's `key` field: `arm_rate|<arm>|<message_type>|<horizon_seconds>`, "
        "`comparison|<message_type>|<horizon_seconds>` or `trend|<arm>|<message_type>|<day>`. "
        "The latest record per key is the current value.",
    ),
    "key of the rejected record": (
        {"type": ["string", "null"]},
        "The rejected record's own key, byte for byte (none if it had none).",
    ),
}


@dataclass(frozen=True)
class _Internal:
    summary: str
    message: str  # message name
    payload: str  # component schema
    key: dict[str, Any]


_INTERNAL: dict[str, _Internal] = {
    ROUTER_BY_PATIENT: _Internal(
        "Send requests re-keyed by NHS number, co-partitioned with `eligibility`, so that "
        "routing finds the patient's eligibility in its local table.",
        "RoutedSendRequest",
        "SendRequest",
        {
            "type": "string",
            "pattern": "^[0-9]{10}$",
            "description": "The request's `patient.nhs_number`.",
        },
    ),
    METRIC_FACTS: _Internal(
        "Per-message facts of the pilot (sent, read, fallback, responded), placed by arm, "
        "message type and practice for counting: a record per partition and batch of "
        "events, holding the facts whose `<arm>|<message_type>|<ods_code>` the producer's "
        "partitioner (murmur2) puts in that partition.",
        "MetricFacts",
        "MetricFacts",
        {
            "type": "null",
            "description": "None: a record is placed by partition. (Workers before "
            "2026-12-07 sent one MetricFact a record, keyed "
            "`<arm>|<message_type>|<ods_code>`; such records are still read.)",
        },
    ),
    PRACTICE_STATS: _Internal(
        "Each practice's matured counts, re-keyed by message type so that one place sees "
        "every practice of a type: a record per message type and tick of the snapshot "
        "timer, holding the practices whose counts changed.",
        "PracticeSnapshots",
        "PracticeSnapshots",
        {"type": "string", "description": "The message type (or `all`)."},
    ),
    BATCH_PROGRESS: _Internal(
        "Each batch message's outcome (delivered, failed, sent or not sent), re-keyed by "
        "batch id so that the batch's owner counts it, once per message.",
        "BatchOutcome",
        "BatchOutcome",
        {"type": "string", "description": "The message's `batch_id`, UTF-8."},
    ),
    SEND_OUTCOMES: _Internal(
        "When the provider accepted each message's own send (or it was recorded "
        "unconfirmed), written by the dispatcher before it records the send. An NHS App "
        "message's fallback deadline starts there, so a backlog in front of the NHS App "
        "never sends the SMS first; the message status says `sent` from it; the pilot's "
        "metrics time reads and responses from it (when the patient could first see it).",
        "SendOutcome",
        "SendOutcome",
        {"type": "string", "description": "The message's `message_id`, UTF-8."},
    ),
    FAILED_NUMBERS: _Internal(
        "The latest SMS failure per phone number, for the likely-to-fail check. Holds no "
        "phone number: the key is a keyed hash of it.",
        "FailedNumber",
        "FailedNumber",
        {
            "type": "string",
            "pattern": "^[0-9a-f]{32}$",
            "description": "HMAC-SHA256 of the E.164 number under `APPFIRST_NUMBER_HASH_KEY`, "
            "first 32 hex digits.",
        },
    ),
}


def _internal_schemas() -> dict[str, dict[str, Any]]:
    fact = TypeAdapter(Fact).json_schema(ref_template=_SCHEMAS + "{model}")
    fact["title"] = "MetricFact"
    notes = {
        "dispatched_at": "Epoch seconds of the message's dispatch.",
        "delay": "Seconds from the dispatch to this fact.",
        "ods_code": "The practice (`-` if unknown).",
    }
    for name, note in notes.items():
        if name in fact.get("properties", {}):
            fact["properties"][name]["description"] = note

    def counts(order: str) -> dict[str, Any]:
        return {
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
            "minItems": 4,
            "maxItems": 4,
            "description": order,
        }

    return {
        "MetricFact": fact,
        "MetricFacts": {
            "title": "MetricFacts",
            "type": "object",
            "required": ["facts"],
            "properties": {
                "facts": {
                    "type": "array",
                    "items": {"$ref": _SCHEMAS + "MetricFact"},
                    "maxItems": FACTS_PER_RECORD,
                    "description": "Facts of one batch of events, all in this partition.",
                },
            },
        },
        "PracticeSnapshots": {
            "title": "PracticeSnapshots",
            "type": "object",
            "required": ["snapshots"],
            "properties": {
                "snapshots": {
                    "type": "array",
                    "items": {"$ref": _SCHEMAS + "PracticeStats"},
                    "description": "Practices whose counts changed, up to 256 KiB of them. "
                    "(Workers before 2026-12-07 sent one PracticeStats a record; such "
                    "records are still read.)",
                },
            },
        },
        "PracticeStats": {
            "title": "PracticeStats",
            "type": "object",
            "required": ["arm", "ods", "type", "counts", "days"],
            "properties": {
                "arm": {"type": "string", "description": "The practice's pilot arm."},
                "ods": {"type": "string", "description": "The practice's ODS code."},
                "type": {"type": "string", "description": "The message type counted."},
                "counts": {
                    "type": "object",
                    "description": "Matured counts by horizon (seconds, as a string).",
                    "additionalProperties": counts("[sent, responded, read, fallbacks]"),
                },
                "days": {
                    "type": "object",
                    "description": "Daily counts by London day of dispatch (YYYY-MM-DD).",
                    "additionalProperties": counts("[sent, read, fallbacks, responded]"),
                },
            },
        },
        "BatchOutcome": {
            "title": "BatchOutcome",
            "type": "object",
            "required": ["message_id", "outcome"],
            "properties": {
                "message_id": {"type": "string", "description": "The batch message."},
                "outcome": {
                    "type": "string",
                    "enum": ["delivered", "failed", "sent", "not_sent"],
                    "description": "What the batch counts: a delivery receipt, a failed "
                    "SMS, an email sent, or no channel at routing.",
                },
                "without_valid_mobile": {
                    "type": "boolean",
                    "description": "Not sent for want of a valid mobile number.",
                },
            },
        },
        "SendOutcome": {
            "title": "SendOutcome",
            "type": "object",
            "required": ["outcome", "at", "channel"],
            "properties": {
                "outcome": {
                    "type": "string",
                    "enum": ["accepted", "unconfirmed"],
                    "description": "`accepted`: the NHS App answered with its id. "
                    "`unconfirmed`: a request may have arrived and is never resent.",
                },
                "at": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When the dispatcher heard (RFC 3339, UTC).",
                },
                "channel": {
                    "type": "string",
                    "enum": ["nhs_app", "sms", "email"],
                    "description": "The message's own channel (fallback SMS are not told).",
                },
            },
        },
        "FailedNumber": {
            "title": "FailedNumber",
            "type": "object",
            "required": ["failed_at"],
            "properties": {
                "failed_at": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When the latest SMS to the number failed.",
                }
            },
        },
    }


def _model_schemas() -> tuple[dict[str, dict[str, Any]], dict[type[models.Event], str]]:
    """JSON Schemas of the catalogue's events, with their ``$ref``s pointed at
    ``components/schemas``: AsyncAPI resolves every ``$ref`` from the document's root, so
    pydantic's local ``#/$defs/...`` would not resolve there."""
    event_models = list(dict.fromkeys(spec.model for spec in CATALOGUE))
    refs, top = models_json_schema(
        [(m, "validation") for m in event_models], ref_template=_SCHEMAS + "{model}"
    )
    defs: dict[str, dict[str, Any]] = top.get("$defs", {})
    names = {m: refs[(m, "validation")]["$ref"].removeprefix(_SCHEMAS) for m in event_models}
    # The .avsc files are the source of truth and hold the few field docs there are.
    for model, name in names.items():
        properties = defs[name].get("properties", {})
        for field in schema_for(model).raw["fields"]:
            if "doc" in field and field["name"] in properties:
                properties[field["name"]].setdefault("description", field["doc"])
    return defs, names


def _key_schema(key: str, model: type[models.Event], json_schema: dict[str, Any]) -> dict[str, Any]:
    if key in _KEY_NOTES:
        base, note = _KEY_NOTES[key]
        return {**base, "description": note}
    if key not in model.model_fields:
        return {"type": "string", "description": key}
    field = json_schema.get("properties", {}).get(key, {})
    constraints = {
        k: v for k, v in field.items() if k in ("pattern", "minLength", "maxLength", "format")
    }
    note = f"The record's `{key}` field, UTF-8."
    if key == "message_id":
        note += (
            " Every topic keyed by message_id is co-partitioned, so that one worker sees all"
            " of a message's events in order: records keyed otherwise are not joined."
        )
    return {"type": "string", **constraints, "description": note}


def _kafka_message(key: dict[str, Any], **extra: str) -> dict[str, Any]:
    return {"kafka": {"key": key, **extra, "bindingVersion": KAFKA_BINDING_VERSION}}


def _channel_bindings(
    address: str, retention: Retention, retention_ms: int | None, partitions: int, replicas: int
) -> dict[str, Any]:
    config: dict[str, Any] = {"cleanup.policy": [retention]}
    if retention_ms is not None:
        config["retention.ms"] = retention_ms
    return {
        "kafka": {
            "topic": address,
            "partitions": partitions,
            "replicas": replicas,
            "topicConfiguration": config,
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }


def _contract_messages(
    name: str, model: type[models.Event], json_name: str, key: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    event = model.__name__
    summary = _SUMMARIES.get(name, f"{event} events.")
    avro = schema_for(model)
    messages: dict[str, dict[str, Any]] = {
        f"{event}Json": {
            "name": event,
            "title": f"{event} (JSON)",
            "summary": summary,
            "description": "One UTF-8 JSON object. Timestamps are RFC 3339 in UTC. Written "
            "when `APPFIRST_CODEC=json` (the default).",
            "contentType": JSON_CONTENT_TYPE,
            "payload": {"$ref": _SCHEMAS + json_name},
            "bindings": _kafka_message(key),
            **(
                {"examples": [{"name": f"{event}Example", "payload": _EXAMPLES[name]}]}
                if name in _EXAMPLES
                else {}
            ),
        },
        f"{event}Avro": {
            "name": event,
            "title": f"{event} (Avro single-object)",
            "summary": summary,
            "description": "Avro single-object encoding: the bytes `C3 01`, the writer "
            "schema's 8-byte CRC-64-AVRO fingerprint (little-endian, here "
            f"`{avro.fingerprint.hex()}`), then the Avro binary body. Timestamps are "
            "`timestamp-millis`. Written when `APPFIRST_CODEC=avro`.",
            "contentType": AVRO_CONTENT_TYPE,
            "payload": {"$ref": f"{_SCHEMAS}{event}Avro"},
            "bindings": _kafka_message(key),
            "x-avro-fingerprint": avro.fingerprint.hex(),
        },
    }
    if _reads(WORKER.get(name, WorkerUse())):
        messages[f"{event}Confluent"] = {
            "name": event,
            "title": f"{event} (Avro, Confluent wire format)",
            "summary": summary,
            "description": "The byte `00`, a 4-byte big-endian schema id, then the Avro "
            "binary body. Accepted on input when `APPFIRST_SCHEMA_REGISTRY_URL` is set: the "
            "writer schema is fetched from the registry by id and resolved to this one, so "
            "it must be compatible with it. The worker never writes this format.",
            "contentType": AVRO_CONTENT_TYPE,
            "payload": {"$ref": f"{_SCHEMAS}{event}Avro"},
            "bindings": _kafka_message(
                key, schemaIdLocation="payload", schemaIdPayloadEncoding="confluent"
            ),
        }
    return messages


def _channel_description(written_by: str, read_by: str, internal: bool) -> str:
    lines = [f"Written by: {written_by}.", f"Read by: {read_by}."]
    if internal:
        lines += [
            "",
            "**Internal**: not part of the contract. It may change or go without notice; "
            "integrators should neither read nor write it.",
        ]
    return "\n".join(lines)


def _reads(use: WorkerUse) -> bool:
    return bool(use.receives or use.broadcast)


def _operations(channels: dict[str, dict[str, Any]], group_id: str) -> dict[str, dict[str, Any]]:
    operations: dict[str, dict[str, Any]] = {}
    for name, channel in channels.items():
        use = WORKER.get(name)
        if use is None:
            continue
        camel = "".join(part.capitalize() for part in name.split("-"))
        ref = {"$ref": f"#/channels/{name}"}
        messages = list(channel["messages"])
        if _reads(use):
            parts = []
            if use.receives:
                parts.append(
                    f"In the consumer group `{group_id}`, by the worker's "
                    f"{', '.join(use.receives)}."
                )
            if use.broadcast:
                parts.append(
                    "Read whole from the beginning by every worker process, outside the "
                    f"consumer group, for the worker's {', '.join(use.broadcast)}."
                )
            bindings: dict[str, Any] = {}
            if use.receives:
                bindings["groupId"] = {"type": "string", "enum": [group_id]}
            operations[f"receive{camel}"] = {
                "action": "receive",
                "channel": ref,
                "title": f"Receive {name}",
                "summary": f"The worker reads `{channel['address']}`.",
                "description": " ".join(parts),
                "messages": [{"$ref": f"#/channels/{name}/messages/{m}"} for m in messages],
                "tags": channel["tags"],
                "bindings": {"kafka": {**bindings, "bindingVersion": KAFKA_BINDING_VERSION}},
            }
        if use.sends:
            written = [m for m in messages if not m.endswith("Confluent")]
            codec = " In the codec `APPFIRST_CODEC` names: JSON unless it says `avro`."
            operations[f"send{camel}"] = {
                "action": "send",
                "channel": ref,
                "title": f"Send {name}",
                "summary": f"The worker writes `{channel['address']}`.",
                "description": f"By the worker's {', '.join(use.sends)}."
                + (codec if len(written) > 1 else ""),
                "messages": [{"$ref": f"#/channels/{name}/messages/{m}"} for m in written],
                "tags": channel["tags"],
            }
    return operations


def _info(prefix: str) -> dict[str, Any]:
    description = f"""\
Kafka topics of appfirst: NHS App first for patient messages, SMS as the safety net.

**Topic names.** Every topic name is `APPFIRST_TOPIC_PREFIX` followed by the names below.
This document was generated with the prefix `{prefix}` (the default is
`{DEFAULT_PREFIX}`); `appfirst asyncapi` writes it for the prefix of its environment.

**Public and internal topics.** Channels tagged `public` are the contract (CONTRACT.md,
"Topics"): they may gain fields and topics, never lose or rename them. Channels tagged
`internal` are the worker's own repartition topics, listed so that operators can see
everything on the cluster; do not read or write them. The worker also uses Faust's own
topics (`<prefix>worker-*-changelog`, `<prefix>worker-__assignor-__leader`), not listed.

**Keys** are UTF-8 strings; each message's Kafka binding says what the key is.

**Encodings.** Every topic the worker reads accepts, record by record, JSON, Avro
single-object encoding, or Confluent wire format when a schema registry is configured
(`APPFIRST_SCHEMA_REGISTRY_URL`): one message per encoding below. The worker writes in
the codec `APPFIRST_CODEC` names (`json` by default, or `avro`). JSON payloads are
described by JSON Schema, Avro payloads by the Avro schemas that are the source of truth
for field types. A record that cannot be decoded or validated goes to `dead-letter`.

**Operations** are the worker's (`appfirst worker`): what it receives and what it sends.
"""
    return {"title": "appfirst topics", "version": version("appfirst"), "description": description}


def build_document(
    *,
    prefix: str = DEFAULT_PREFIX,
    partitions: int = DEFAULT_PARTITIONS,
    replicas: int = DEFAULT_REPLICAS,
    bootstrap: str = DEFAULT_BOOTSTRAP,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every catalogue topic, public and internal.

    ``prefix`` is ``APPFIRST_TOPIC_PREFIX`` (addresses are ``prefix + name``, as
    ``Settings.topic`` makes them); ``bootstrap`` is the default of the server's variable.
    """
    schemas, json_names = _model_schemas()
    channels: dict[str, dict[str, Any]] = {}
    for spec in CATALOGUE:
        address = f"{prefix}{spec.name}"
        json_name = json_names[spec.model]
        key = _key_schema(spec.key, spec.model, schemas[json_name])
        channels[spec.name] = {
            "address": address,
            "title": spec.name,
            "summary": _SUMMARIES.get(spec.name, f"{spec.model.__name__} events."),
            "description": _channel_description(
                spec.written_by,
                spec.read_by,
                internal=False,
            ),
            "messages": _contract_messages(spec.name, spec.model, json_name, key),
            "tags": [_PUBLIC_TAG],
            "bindings": _channel_bindings(
                address, spec.retention, spec.retention_ms, partitions, replicas
            ),
        }
        schemas[f"{spec.model.__name__}Avro"] = {
            "schemaFormat": AVRO_SCHEMA_FORMAT,
            "schema": schema_for(spec.model).raw,
        }
    schemas.update(_internal_schemas())
    for name, retention in INTERNAL_TOPICS.items():
        address = f"{prefix}{name}"
        about = _INTERNAL.get(name)
        use = WORKER.get(name, WorkerUse())
        message = about.message if about else "Record"
        channels[name] = {
            "address": address,
            "title": name,
            "summary": about.summary if about else "Internal topic of the worker.",
            "description": _channel_description(
                "the worker's " + (", ".join(use.sends) or "agents"),
                "the worker's " + (", ".join(use.receives + use.broadcast) or "agents"),
                internal=True,
            ),
            "messages": {
                f"{message}Json": {
                    "name": message,
                    "title": f"{message} (JSON)",
                    "contentType": JSON_CONTENT_TYPE,
                    "payload": {"$ref": _SCHEMAS + about.payload} if about else {},
                    "bindings": _kafka_message(about.key if about else {"type": "string"}),
                }
            },
            "tags": [_INTERNAL_TAG],
            "bindings": _channel_bindings(address, retention, None, partitions, replicas),
        }
    document = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": _info(prefix),
        "defaultContentType": JSON_CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "title": "Kafka",
                "description": "The Kafka cluster of `APPFIRST_BROKER` "
                "(`kafka://host:port[;host:port]`).",
                "variables": {
                    "bootstrap": {
                        "default": bootstrap,
                        "description": "host:port of a bootstrap broker: `APPFIRST_BROKER` "
                        "without `kafka://`.",
                        "examples": [DEFAULT_BOOTSTRAP],
                    }
                },
            }
        },
        "channels": channels,
        "operations": _operations(channels, f"{prefix}worker"),
        "components": {
            "schemas": schemas,
            "tags": {
                "public": {
                    "name": "public",
                    "description": "A contract topic (CONTRACT.md, Topics): stable.",
                },
                "internal": {
                    "name": "internal",
                    "description": "The worker's own topic: not part of the contract.",
                },
            },
        },
    }
    # A tree of fresh objects: parts shared above (the cached Avro schemas, tags, keys) would
    # otherwise let a caller's edit reach the codecs, and become anchors in YAML.
    fresh: dict[str, Any] = json.loads(json.dumps(document))
    return fresh


def document_for(settings: Settings) -> dict[str, Any]:
    """The document for a deployment's topic prefix, partitions and replicas. The broker is
    left a variable: its default stays the same wherever the document is generated."""
    return build_document(
        prefix=settings.topic_prefix,
        partitions=settings.partitions,
        replicas=settings.replication_factor,
    )


def render(document: dict[str, Any], fmt: Format = "json") -> str:
    if fmt == "yaml":
        # Optional: PyYAML is no dependency of ours, so only where it happens to be installed.
        yaml = import_module("yaml")
        text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
        return text
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
