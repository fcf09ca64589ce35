"""The Avro schemas (the source of truth for field types) and the pydantic models agree.

Nothing here is written per field: the model side is read from its type hints
(``typing.get_type_hints(include_extras=True)``), the Avro side from the ``.avsc`` file, and
the two are walked together. A model or schema change that breaks the agreement fails here.
"""

from __future__ import annotations

import re
import types
from datetime import date, datetime
from importlib import resources
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest
from pydantic import AwareDatetime, BaseModel, FutureDatetime, NaiveDatetime, PastDatetime

from appfirst.topics import models
from appfirst.topics.catalogue import BY_NAME, CATALOGUE
from appfirst.topics.schemas import (
    EVENT_MODELS,
    history_for,
    schema_file_name,
    schema_for,
    schemas_by_fingerprint,
)

NoneType = type(None)
NAMESPACE = "appfirst.v1"
_AVRO_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DATETIME_TYPES: tuple[type, ...] = (
    datetime,
    AwareDatetime,
    NaiveDatetime,
    PastDatetime,
    FutureDatetime,
)
_PRIMITIVES: dict[type, str] = {
    str: "string",
    bool: "boolean",
    int: "long",
    float: "double",
    bytes: "bytes",
}
TIMESTAMP_MILLIS = {"type": "long", "logicalType": "timestamp-millis"}
DATE = {"type": "int", "logicalType": "date"}

MODEL_IDS = [m.__name__ for m in EVENT_MODELS]


# --- the model side -------------------------------------------------------------------


def _strip_annotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _split_optional(annotation: Any) -> tuple[bool, Any]:
    """(admits None, the one non-None type), for ``X``, ``X | None`` and ``Optional[X]``."""
    annotation = _strip_annotated(annotation)
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        rest = [a for a in args if a is not NoneType]
        assert len(rest) == 1, f"only X | None unions map to Avro here, got {annotation!r}"
        return len(rest) < len(args), _strip_annotated(rest[0])
    if origin is Literal and None in get_args(annotation):
        values = tuple(v for v in get_args(annotation) if v is not None)
        return True, Literal[values]  # type: ignore[valid-type]
    return annotation is NoneType, annotation


def _is_datetime(tp: Any) -> bool:
    return isinstance(tp, type) and (tp in _DATETIME_TYPES or issubclass(tp, datetime))


def _is_date(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, date) and not issubclass(tp, datetime)


# --- the Avro side --------------------------------------------------------------------


def _split_union(avro_type: Any) -> tuple[bool, Any]:
    """(union with "null", the one non-null branch)."""
    if isinstance(avro_type, list):
        rest = [t for t in avro_type if t != "null"]
        assert len(rest) == 1, f"only [null, X] unions map to the models, got {avro_type!r}"
        assert len(avro_type) == len(set(map(repr, avro_type))), "duplicate union branches"
        return len(rest) < len(avro_type), rest[0]
    return False, avro_type


def _normalise(avro_type: Any) -> Any:
    """``{"type": "string"}`` is the primitive ``"string"``; anything richer is kept."""
    if (
        isinstance(avro_type, dict)
        and set(avro_type) == {"type"}
        and isinstance(avro_type["type"], str)
    ):
        return avro_type["type"]
    return avro_type


# --- walking both together ------------------------------------------------------------


def _assert_same_type(py: Any, avro: Any, where: str) -> None:
    avro = _normalise(avro)
    if get_origin(py) is Literal:
        values = list(get_args(py))
        assert isinstance(avro, dict) and avro.get("type") == "enum", (
            f"{where}: Literal in the model, {avro!r} in Avro"
        )
        assert avro["symbols"] == values, f"{where}: enum symbols differ from the Literal"
        assert all(isinstance(v, str) and _AVRO_NAME.match(v) for v in values), (
            f"{where}: Literal values must be valid Avro enum symbols"
        )
        assert _AVRO_NAME.match(avro["name"]), f"{where}: bad enum name"
    elif get_origin(py) is list:
        assert isinstance(avro, dict) and avro.get("type") == "array", (
            f"{where}: a list in the model, {avro!r} in Avro"
        )
        (item,) = get_args(py)
        _assert_same_type(_strip_annotated(item), avro["items"], f"{where}[]")
    elif isinstance(py, type) and issubclass(py, BaseModel):
        assert isinstance(avro, dict) and avro.get("type") == "record", (
            f"{where}: nested model {py.__name__} but Avro {avro!r}"
        )
        assert avro["name"] == py.__name__, f"{where}: record name differs from the model"
        _assert_record_matches(py, avro, where)
    elif _is_datetime(py):
        assert avro == TIMESTAMP_MILLIS, f"{where}: datetime must be long/timestamp-millis"
    elif _is_date(py):
        assert avro == DATE, f"{where}: date must be int/date"
    else:
        assert py in _PRIMITIVES, f"{where}: no Avro mapping known for {py!r}"
        assert avro == _PRIMITIVES[py], (
            f"{where}: {py.__name__} in the model must be {_PRIMITIVES[py]!r} in Avro, got {avro!r}"
        )


def _assert_record_matches(model: type[BaseModel], record: dict[str, Any], where: str) -> None:
    hints = get_type_hints(model, include_extras=True)
    model_names = list(model.model_fields)
    avro_fields = record["fields"]
    avro_names = [f["name"] for f in avro_fields]
    assert avro_names == model_names, f"{where}: field names or order differ"
    assert len(set(avro_names)) == len(avro_names), f"{where}: duplicate Avro fields"

    for field in avro_fields:
        name = field["name"]
        here = f"{where}.{name}"
        info = model.model_fields[name]
        assert info.alias in (None, name), f"{here}: an alias would rename the JSON field"
        assert name in hints, f"{here}: no type hint"

        py_nullable, py_core = _split_optional(hints[name])
        avro_nullable, avro_core = _split_union(field["type"])
        assert py_nullable == avro_nullable, (
            f"{here}: the model {'admits' if py_nullable else 'refuses'} None but Avro "
            f"{'has' if avro_nullable else 'lacks'} a null branch"
        )
        _assert_same_type(py_core, avro_core, here)

        if info.is_required():
            assert "default" not in field, f"{here}: required in the model, Avro has a default"
        else:
            assert "default" in field, f"{here}: the model has a default, Avro has none"
            expected = info.get_default(call_default_factory=True)
            actual = field["default"]
            assert (type(actual), actual) == (type(expected), expected), (
                f"{here}: Avro default {actual!r} != model default {expected!r}"
            )
            if isinstance(field["type"], list):
                # Avro: a union's default must be of the union's first branch.
                first_is_null = field["type"][0] == "null"
                assert first_is_null == (expected is None), (
                    f"{here}: the union's first branch must match the default"
                )


# --- tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", EVENT_MODELS, ids=MODEL_IDS)
def test_schema_agrees_with_model(model: type[models.Event]) -> None:
    raw = schema_for(model).raw
    assert raw["type"] == "record"
    assert raw["name"] == model.__name__
    assert raw.get("namespace") == NAMESPACE
    _assert_record_matches(model, raw, model.__name__)


def test_send_request_nests_the_patient_record() -> None:
    # The walk above recurses; this pins that the nested record really was compared.
    (patient,) = [f for f in schema_for(models.SendRequest).raw["fields"] if f["name"] == "patient"]
    assert patient["type"]["type"] == "record"
    _assert_record_matches(models.Patient, patient["type"], "SendRequest.patient")


@pytest.mark.parametrize("model", EVENT_MODELS, ids=MODEL_IDS)
def test_timestamps_are_exactly_the_datetime_fields(model: type[models.Event]) -> None:
    hints = get_type_hints(model, include_extras=True)
    model_datetimes = {n for n in model.model_fields if _is_datetime(_split_optional(hints[n])[1])}
    avro_timestamps = {
        f["name"]
        for f in schema_for(model).raw["fields"]
        if _normalise(_split_union(f["type"])[1]) == TIMESTAMP_MILLIS
    }
    assert model_datetimes == avro_timestamps


def test_the_walk_understands_every_annotation_form() -> None:
    # Guards the helpers themselves, so that a silent mis-walk cannot make the tests vacuous.
    hints = get_type_hints(models.Dispatch, include_extras=True)
    assert _split_optional(hints["fallback_due_at"]) == (True, AwareDatetime)
    assert _split_optional(hints["dispatched_at"]) == (False, AwareDatetime)
    assert _split_optional(hints["sms_fragments"]) == (True, int)
    assert _split_optional(hints["message_id"]) == (False, str)
    nullable, arm = _split_optional(hints["arm"])
    assert nullable and get_origin(arm) is Literal and get_args(arm) == ("treatment", "control")
    assert _split_union(["null", "long"]) == (True, "long")
    assert _split_union("long") == (False, "long")
    assert _normalise({"type": "string"}) == "string"
    with pytest.raises(AssertionError):
        _assert_same_type(int, "string", "probe")
    with pytest.raises(AssertionError):
        _assert_same_type(AwareDatetime, "long", "probe")


def test_every_schema_file_belongs_to_a_model() -> None:
    directory = resources.files("appfirst.topics").joinpath("schemas")
    files = {p.name for p in directory.iterdir() if p.name.endswith(".avsc")}
    assert files == {schema_file_name(m) for m in EVENT_MODELS}


def test_fingerprints_are_distinct_and_indexed() -> None:
    index = schemas_by_fingerprint()
    versions = sum(1 + len(history_for(m)) for m in EVENT_MODELS)
    assert len(index) == versions  # no two versions share a fingerprint
    for model in EVENT_MODELS:
        fp = schema_for(model).fingerprint
        assert len(fp) == 8
        assert index[fp][0] is model


# --- the topic catalogue against the contract's topic table ---------------------------

# | topic | key | written by | read by | retention | (CONTRACT.md, "Topics")
CONTRACT_TOPICS: tuple[tuple[str, str, str, str, str], ...] = (
    ("send-requests", "message_id", "upstream systems", "router", "delete"),
    ("practice-settings", "ods_code", "practice admin / upstream", "router, metrics", "compact"),
    ("eligibility", "nhs_number", "eligibility sync, upstream", "router", "compact"),
    ("dispatches", "message_id", "router", "dispatcher, tracker, metrics", "delete"),
    ("delivery-receipts", "message_id", "provider callback ingress", "tracker, metrics", "delete"),
    ("read-receipts", "message_id", "provider callback ingress", "tracker, metrics", "delete"),
    ("responses", "message_id", "patient response service", "metrics", "delete"),
    ("fallbacks", "message_id", "tracker", "dispatcher, metrics", "delete"),
    ("pilot-metrics", "metric key", "metrics", "analysts", "compact"),
    ("dead-letter", "key of the rejected record", "any agent", "operators", "delete"),
)

# The contract's "### Event (`topic`)" headings; dead-letter carries our DeadLetter record.
CONTRACT_EVENT_OF_TOPIC: dict[str, str] = {
    "send-requests": "SendRequest",
    "practice-settings": "PracticeSettings",
    "eligibility": "Eligibility",
    "dispatches": "Dispatch",
    "delivery-receipts": "DeliveryReceipt",
    "read-receipts": "ReadReceipt",
    "responses": "Response",
    "fallbacks": "Fallback",
    "pilot-metrics": "PilotMetric",
    "dead-letter": "DeadLetter",
}


@pytest.mark.parametrize(
    ("name", "key", "written_by", "read_by", "retention"),
    CONTRACT_TOPICS,
    ids=[t[0] for t in CONTRACT_TOPICS],
)
def test_contract_topic_is_catalogued(
    name: str, key: str, written_by: str, read_by: str, retention: str
) -> None:
    assert name in BY_NAME, f"contract topic {name} is missing from the catalogue"
    spec = BY_NAME[name]
    assert spec.key == key
    assert spec.retention == retention
    assert spec.config()["cleanup.policy"] == retention
    assert spec.written_by == written_by
    assert spec.read_by == read_by
    assert spec.model.__name__ == CONTRACT_EVENT_OF_TOPIC[name]
    assert spec.model in EVENT_MODELS
    if key in ("message_id", "ods_code", "nhs_number"):
        assert key in spec.model.model_fields, f"{name} is keyed by a field its event lacks"


def test_catalogue_names_are_unique_and_cover_every_event_model() -> None:
    names = [s.name for s in CATALOGUE]
    assert len(names) == len(set(names))
    assert {s.model for s in CATALOGUE} == set(EVENT_MODELS)


def test_a_record_written_with_an_earlier_schema_still_reads() -> None:
    """PilotMetric v1 (before the comparison's detail fields) decodes with v2."""
    from datetime import UTC, datetime
    from io import BytesIO

    from fastavro import schemaless_writer

    from appfirst.codecs.avro import MAGIC, AvroSingleObjectCodec

    (old,) = history_for(models.PilotMetric)
    assert old.fingerprint != schema_for(models.PilotMetric).fingerprint
    record = {f["name"]: None for f in old.raw["fields"]}
    record |= {
        "kind": "comparison",
        "key": "comparison|all|3600",
        "message_type": "all",
        "horizon_seconds": 3600,
        "method": "practice_level_welch_t",
        "difference": -0.05,
        "updated_at": datetime(2026, 11, 21, tzinfo=UTC),
    }
    buf = BytesIO()
    schemaless_writer(buf, old.parsed, record)
    data = MAGIC + old.fingerprint + buf.getvalue()
    decoded = AvroSingleObjectCodec(models.PilotMetric).decode(data)
    assert decoded.difference == -0.05 and decoded.icc is None
