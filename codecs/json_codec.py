"""JSON: one UTF-8 object per record, timestamps RFC 3339 in UTC."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import ValidationError

from appfirst.errors import DecodeError
from appfirst.topics.models import Event

E = TypeVar("E", bound=Event)


class JsonCodec(Generic[E]):
    name = "json"

    def __init__(self, model: type[E]) -> None:
        self.model = model

    def encode(self, event: E) -> bytes:
        return event.model_dump_json().encode("utf-8")

    def decode(self, data: bytes) -> E:
        try:
            return self.model.model_validate_json(data)
        except ValidationError as exc:
            raise DecodeError(describe_validation_error(exc), codec=self.name) from exc


def describe_validation_error(exc: ValidationError) -> str:
    """A short reason naming the failing fields, never their values (they may be PII)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{where}: {err['msg']}")
    return "invalid " + "; ".join(parts)
