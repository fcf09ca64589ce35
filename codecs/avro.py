"""Avro single-object encoding: ``C3 01``, the writer schema's 8-byte CRC-64-AVRO
fingerprint (little-endian), then the Avro binary body."""

from __future__ import annotations

import io
from typing import Any, Generic, TypeVar

from fastavro import schemaless_reader, schemaless_writer
from pydantic import ValidationError

from appfirst.codecs.json_codec import describe_validation_error
from appfirst.errors import DecodeError, UnknownSchemaError
from appfirst.topics.models import Event
from appfirst.topics.schemas import AvroSchema, schema_for, schemas_by_fingerprint

E = TypeVar("E", bound=Event)

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8


def write_body(schema: AvroSchema, event: Event) -> bytes:
    buf = io.BytesIO()
    try:
        schemaless_writer(buf, schema.parsed, event.model_dump(mode="python"))
    except (ValueError, TypeError) as exc:  # a model/schema mismatch: a bug, not bad input
        raise DecodeError(f"cannot write {schema.name} as Avro: {exc}", codec="avro") from exc
    return buf.getvalue()


def read_body(model: type[E], writer: Any, reader: Any, body: bytes, codec: str) -> E:
    buf = io.BytesIO(body)
    try:
        record = schemaless_reader(buf, writer, reader)
    except Exception as exc:  # untrusted bytes: any failure of the reader is bad input
        raise DecodeError(f"corrupt Avro body: {type(exc).__name__}", codec=codec) from exc
    if buf.tell() != len(body):
        raise DecodeError(f"{len(body) - buf.tell()} bytes after the Avro body", codec=codec)
    try:
        return model.model_validate(record)
    except ValidationError as exc:
        raise DecodeError(describe_validation_error(exc), codec=codec) from exc


class AvroSingleObjectCodec(Generic[E]):
    name = "avro"

    def __init__(self, model: type[E]) -> None:
        self.model = model
        self.schema = schema_for(model)
        self._header = MAGIC + self.schema.fingerprint

    def encode(self, event: E) -> bytes:
        return self._header + write_body(self.schema, event)

    def decode(self, data: bytes) -> E:
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoding", codec=self.name)
        fp = data[2:HEADER_LEN]
        if fp == self.schema.fingerprint:
            writer = self.schema.parsed
        else:
            known = schemas_by_fingerprint().get(fp)
            if known is None:
                raise UnknownSchemaError(
                    f"unknown Avro schema fingerprint {fp.hex()}", codec=self.name
                )
            writer_model, writer_schema = known
            if writer_model is not self.model:
                raise DecodeError(
                    f"Avro record is a {writer_model.__name__}, expected {self.model.__name__}",
                    codec=self.name,
                )
            writer = writer_schema.parsed
        return read_body(self.model, writer, self.schema.parsed, data[HEADER_LEN:], self.name)
