"""The Avro schemas in ``schemas/``: loaded once, parsed, fingerprinted."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from appfirst.topics import models

EVENT_MODELS: tuple[type[models.Event], ...] = (
    models.SendRequest,
    models.PracticeSettings,
    models.Eligibility,
    models.Dispatch,
    models.DeliveryReceipt,
    models.ReadReceipt,
    models.Response,
    models.Fallback,
    models.PilotMetric,
    models.DeadLetter,
    models.BatchEvent,
    models.BatchStatus,
    models.MessageStatus,
)


@dataclass(frozen=True)
class AvroSchema:
    name: str
    raw: dict[str, Any]
    parsed: Any
    canonical: str
    fingerprint: bytes  # CRC-64-AVRO, little-endian, as single-object encoding writes it


def schema_file_name(model: type[models.Event]) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", model.__name__).lower() + ".avsc"


@cache
def schema_for(model: type[models.Event]) -> AvroSchema:
    return _load(
        model, resources.files("appfirst.topics").joinpath("schemas", schema_file_name(model))
    )


def _load(model: type[models.Event], path: Any) -> AvroSchema:
    raw = json.loads(path.read_text(encoding="utf-8"))
    parsed = parse_schema(raw, _write_hint=False)
    canonical = to_parsing_canonical_form(raw)
    digest = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return AvroSchema(model.__name__, raw, parsed, canonical, digest)


def history_for(model: type[models.Event]) -> list[AvroSchema]:
    """Earlier versions of the model's schema (``schemas/history/<name>.v<N>.avsc``)."""
    folder = resources.files("appfirst.topics").joinpath("schemas", "history")
    stem = schema_file_name(model).removesuffix(".avsc")
    if not folder.is_dir():
        return []
    return [
        _load(model, f)
        for f in sorted(folder.iterdir(), key=lambda f: f.name)
        if f.name.startswith(stem + ".v") and f.name.endswith(".avsc")
    ]


@cache
def schemas_by_fingerprint() -> dict[bytes, tuple[type[models.Event], AvroSchema]]:
    """Every schema this build can read, by fingerprint: current and earlier versions, so
    records written before a compatible change still decode."""
    known: dict[bytes, tuple[type[models.Event], AvroSchema]] = {}
    for m in EVENT_MODELS:
        for old in history_for(m):
            known[old.fingerprint] = (m, old)
        known[schema_for(m).fingerprint] = (m, schema_for(m))
    return known
