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
    text = resources.files("appfirst.topics").joinpath("schemas", schema_file_name(model))
    raw = json.loads(text.read_text(encoding="utf-8"))
    parsed = parse_schema(raw, _write_hint=False)
    canonical = to_parsing_canonical_form(raw)
    digest = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return AvroSchema(model.__name__, raw, parsed, canonical, digest)


@cache
def schemas_by_fingerprint() -> dict[bytes, tuple[type[models.Event], AvroSchema]]:
    """Every schema this build can read, by fingerprint (older versions join here)."""
    return {schema_for(m).fingerprint: (m, schema_for(m)) for m in EVENT_MODELS}
