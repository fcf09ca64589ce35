"""Confluent wire format: ``00``, a 4-byte big-endian schema id, the Avro binary body.

Writer schemas are fetched from the schema registry by id (``GET /schemas/ids/{id}``)
once and cached; records are read into our own schema by Avro schema resolution.
"""

from __future__ import annotations

import json
from typing import Any, Generic, TypeVar

import httpx
from fastavro import parse_schema

from appfirst.codecs.avro import read_body, write_body
from appfirst.errors import DecodeError, UnknownSchemaError
from appfirst.topics.models import Event
from appfirst.topics.schemas import schema_for

E = TypeVar("E", bound=Event)

MAGIC = b"\x00"
HEADER_LEN = 5


def schema_id_of(data: bytes) -> int:
    if len(data) < HEADER_LEN or data[:1] != MAGIC:
        raise DecodeError("not Confluent wire format", codec="confluent")
    return int.from_bytes(data[1:HEADER_LEN], "big")


class SchemaRegistry:
    """A small, cached client of the Confluent schema registry REST API."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._timeout = httpx.Timeout(timeout)
        self._schemas: dict[int, Any] = {}
        self._ids: dict[str, int] = {}

    def cached(self, schema_id: int) -> Any | None:
        return self._schemas.get(schema_id)

    async def fetch(self, schema_id: int) -> Any:
        if schema_id in self._schemas:
            return self._schemas[schema_id]
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            try:
                resp = await client.get(f"{self.url}/schemas/ids/{schema_id}")
            except httpx.HTTPError as exc:
                raise DecodeError(
                    f"schema registry unreachable: {type(exc).__name__}", codec="confluent"
                ) from exc
        if resp.status_code == 404:
            raise UnknownSchemaError(f"schema id {schema_id} not in registry", codec="confluent")
        if resp.status_code != 200:
            raise DecodeError(f"schema registry answered {resp.status_code}", codec="confluent")
        parsed = parse_schema(json.loads(resp.json()["schema"]), _write_hint=False)
        self._schemas[schema_id] = parsed
        return parsed

    async def register(self, subject: str, schema: dict[str, Any]) -> int:
        if subject in self._ids:
            return self._ids[subject]
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            resp = await client.post(
                f"{self.url}/subjects/{subject}/versions",
                json={"schema": json.dumps(schema)},
                headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
            )
        resp.raise_for_status()
        schema_id = int(resp.json()["id"])
        self._ids[subject] = schema_id
        return schema_id


class ConfluentCodec(Generic[E]):
    name = "confluent"

    def __init__(self, model: type[E], registry: SchemaRegistry | None) -> None:
        self.model = model
        self.schema = schema_for(model)
        self.registry = registry

    def decode(self, data: bytes) -> E:
        schema_id = schema_id_of(data)
        if self.registry is None:
            raise DecodeError(
                "Confluent wire format but no schema registry is configured", codec=self.name
            )
        writer = self.registry.cached(schema_id)
        if writer is None:
            raise UnknownSchemaError(f"schema id {schema_id} not fetched", codec=self.name)
        return read_body(self.model, writer, self.schema.parsed, data[HEADER_LEN:], self.name)

    def encode_with_id(self, event: E, schema_id: int) -> bytes:
        return MAGIC + schema_id.to_bytes(4, "big") + write_body(self.schema, event)
