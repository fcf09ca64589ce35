"""Bytes <-> events: round trips, fixed bytes from the Avro spec, detection and failures."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appfirst.codecs import Decoder, Encoder, encoding_of
from appfirst.codecs.avro import AvroSingleObjectCodec
from appfirst.codecs.confluent import ConfluentCodec, SchemaRegistry
from appfirst.codecs.json_codec import JsonCodec
from appfirst.errors import DecodeError, UnknownSchemaError
from appfirst.rules.nhs_number import check_digit
from appfirst.topics import models
from appfirst.topics.schemas import EVENT_MODELS, schema_for

T0 = datetime(2024, 3, 4, 9, 30, 15, 123000, tzinfo=UTC)
NHS = "943476591" + str(check_digit("943476591"))
REGISTRY_URL = "http://schema-registry.invalid"  # never contacted: only its cache is used

HYPOTHESIS = settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- one realistic instance per model: all optional fields set, and all unset --------------

FULL: list[models.Event] = [
    models.SendRequest(
        message_id="req-2024-03-04.0001",
        requested_at=T0,
        ods_code="A81001",
        organisation_type="other",
        nation="wales",
        origin="batch",
        batch_id="batch:2024-03-04:17",
        message_type="bp_monitoring_questionnaire",
        body="Please send your blood pressure readings \u2014 https://example.org/bp \U0001f600",
        patient=models.Patient(
            nhs_number=NHS, mobile="07700 900123", email="pat@example.org", deceased=True
        ),
        email_selected=True,
        number_overridden=True,
    ),
    models.PracticeSettings(
        ods_code="A81001", nhs_app_individual=True, arm="treatment", likely_to_fail_check=True
    ),
    models.Eligibility(
        nhs_number=NHS,
        has_nhs_app=True,
        notifications_enabled=False,
        proxy_only=True,
        checked_at=T0,
    ),
    models.Dispatch(
        message_id="req-1",
        channel="nhs_app",
        reason="nhs_app_enabled",
        dispatched_at=T0,
        ods_code="A81001",
        arm="control",
        origin="batch",
        message_type="questionnaire",
        fallback_due_at=T0 + timedelta(hours=24),
        sms_fragments=2,
        batch_id="batch-9",
        requested_at=T0 - timedelta(seconds=3),
        nhs_number=NHS,
        mobile="+447700900123",
        email="pat@example.org",
        body="Please fill in the questionnaire.",
    ),
    models.DeliveryReceipt(
        message_id="req-1",
        channel="sms",
        status="temporary_failure",
        occurred_at=T0,
        provider_reference="notify-7f3a",
        leg="fallback",
    ),
    models.ReadReceipt(message_id="req-1", read_at=T0),
    models.Response(
        message_id="req-1",
        responded_at=T0,
        attachments=2,
        files=[
            models.ResponseFile(name="rash.JPG", size_bytes=2_400_000),
            models.ResponseFile(name="letter.pdf", size_bytes=7 * 1024 * 1024),
        ],
    ),
    models.Fallback(
        message_id="req-1",
        reason="unnotified",
        due_at=T0,
        emitted_at=T0 + timedelta(seconds=1),
        fallback_id="fb-req-1",
        ods_code="A81001",
        arm="treatment",
        origin="individual",
        message_type="sms_with_response",
        mobile="07700900123",
        body="Reply YES to confirm",
        sms_fragments=1,
    ),
    models.PilotMetric(
        kind="arm_rate",
        key="arm_rate|treatment|all|3600",
        arm="treatment",
        message_type="all",
        horizon_seconds=3600,
        sent=120,
        responded=30,
        response_rate=0.25,
        read=80,
        fallbacks=12,
        updated_at=T0,
    ),
    models.PilotMetric(
        kind="comparison",
        key="comparison|sms|86400",
        message_type="sms",
        horizon_seconds=86400,
        treatment_rate=0.31,
        control_rate=0.22,
        difference=0.09,
        ci_low=-0.012345678901234,
        ci_high=0.17,
        p_value=1e-12,
        method="newcombe",
        updated_at=T0,
    ),
    models.PilotMetric(
        kind="trend",
        key="trend|control|questionnaire|2024-03-04",
        arm="control",
        message_type="questionnaire",
        day=date(2024, 3, 4),
        sent=40,
        read=0,
        fallbacks=3,
        responded=9,
        updated_at=T0,
    ),
    models.DeadLetter(
        source_topic="appfirst.send-requests",
        partition=3,
        offset=2**40,
        key="req-1",
        original=bytes(range(256)),
        reason="invalid patient.nhs_number: ...",
        agent="router",
        occurred_at=T0,
    ),
    models.BatchEvent(
        batch_id="b-3f9c2a71d04e",
        kind="plan",
        occurred_at=T0,
        ods_code="A81001",
        organisation_type="gp",
        message_type="questionnaire",
        body="Please fill in this questionnaire: https://example.org/q",
        patient_list=2000,
        contactable=1800,
        non_contactable=200,
        without_valid_mobile=80,
        send_at=T0 + timedelta(hours=2),
        stagger_count=100,
        stagger_every_seconds=600.0,
    ),
    models.BatchEvent(
        batch_id="b-3f9c2a71d04e",
        kind="non_contactable",
        occurred_at=T0,
        line=12,
        nhs_number="1234567890",
        name="Ann Smith",
        date_of_birth="01/02/1950",
        reason="invalid_nhs_number",
    ),
    models.BatchStatus(
        batch_id="b-3f9c2a71d04e",
        status="sending",
        ods_code="A81001",
        message_type="questionnaire",
        patient_list=2000,
        contactable=1800,
        non_contactable=200,
        without_valid_mobile=80,
        released=300,
        delivered=250,
        failed_to_deliver=3,
        saved=120,
        send_at=T0,
        stagger_count=100,
        stagger_every_seconds=600.0,
        next_release_at=T0 + timedelta(minutes=30),
        cancelled_at=None,
        links_revoked=True,
        links_revoked_at=T0 + timedelta(minutes=20),
        updated_at=T0 + timedelta(minutes=21),
    ),
    models.MessageStatus(
        message_id="b-3f9c2a71d04e.000042",
        channel="sms",
        status="failed",
        label="Failed to deliver",
        reason="permanent_failure",
        batch_id="b-3f9c2a71d04e",
        updated_at=T0,
    ),
]

MINIMAL: list[models.Event] = [
    models.SendRequest(
        message_id="r",
        requested_at=T0,
        ods_code="Y1",
        origin="individual",
        message_type="sms",
        body="x",
        patient=models.Patient(nhs_number=NHS),
    ),
    models.PracticeSettings(ods_code="A81001"),
    models.Eligibility(
        nhs_number=NHS, has_nhs_app=False, notifications_enabled=False, checked_at=T0
    ),
    models.Dispatch(
        message_id="r",
        channel="none",
        reason="deceased",
        dispatched_at=T0,
        ods_code="Y1",
        arm=None,
        origin="individual",
        message_type="sms",
    ),
    models.DeliveryReceipt(message_id="r", channel="nhs_app", status="delivered", occurred_at=T0),
    models.ReadReceipt(message_id="r", read_at=datetime(1970, 1, 1, tzinfo=UTC)),
    models.Response(message_id="r", responded_at=T0),
    models.Fallback(
        message_id="r",
        reason="unread",
        due_at=T0,
        emitted_at=T0,
        fallback_id="f",
        ods_code="Y1",
        origin="batch",
        message_type="appointment_reminder",
    ),
    models.PilotMetric(
        kind="comparison",
        key="c",
        message_type="all",
        horizon_seconds=0,
        method="m",
        updated_at=T0,
    ),
    models.DeadLetter(
        source_topic="t",
        partition=0,
        offset=0,
        key=None,
        original=b"",
        reason="r",
        agent="a",
        occurred_at=T0,
    ),
    models.BatchEvent(batch_id="b", kind="cancel", occurred_at=T0),
    models.BatchStatus(
        batch_id="b",
        status="scheduled",
        ods_code="A",
        message_type="sms",
        patient_list=0,
        contactable=0,
        non_contactable=0,
        without_valid_mobile=0,
        released=0,
        send_at=T0,
        updated_at=T0,
    ),
    models.MessageStatus(
        message_id="m", channel="nhs_app", status="sent", label="sent - To: NHS App", updated_at=T0
    ),
]

SAMPLES = [*FULL, *MINIMAL]
SAMPLE_IDS = [f"{type(e).__name__}-full-{i}" for i, e in enumerate(FULL)] + [
    f"{type(e).__name__}-minimal" for e in MINIMAL
]


def test_samples_cover_every_model() -> None:
    assert {type(e) for e in FULL} == set(EVENT_MODELS)
    assert {type(e) for e in MINIMAL} == set(EVENT_MODELS)


def assert_same_event(decoded: models.Event, original: models.Event) -> None:
    assert type(decoded) is type(original)
    assert decoded == original
    # Same instants is not enough: the JSON form (offsets included) must match too.
    assert decoded.model_dump(mode="json") == original.model_dump(mode="json")


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("event", SAMPLES, ids=SAMPLE_IDS)
def test_json_round_trip(event: models.Event) -> None:
    codec = JsonCodec(type(event))
    data = codec.encode(event)
    assert isinstance(json.loads(data.decode("utf-8")), dict)
    assert_same_event(codec.decode(data), event)


@pytest.mark.parametrize("event", SAMPLES, ids=SAMPLE_IDS)
def test_avro_round_trip(event: models.Event) -> None:
    codec = AvroSingleObjectCodec(type(event))
    data = codec.encode(event)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == schema_for(type(event)).fingerprint
    assert_same_event(codec.decode(data), event)


@pytest.mark.parametrize("codec", ["json", "avro"])
@pytest.mark.parametrize("event", SAMPLES, ids=SAMPLE_IDS)
def test_encoder_decoder_round_trip(event: models.Event, codec: Any) -> None:
    data = Encoder(type(event), codec).encode(event)
    assert encoding_of(data) == codec
    assert_same_event(Decoder(type(event)).decode(data), event)


@pytest.mark.parametrize("event", SAMPLES, ids=SAMPLE_IDS)
def test_confluent_round_trip(event: models.Event) -> None:
    model = type(event)
    registry = SchemaRegistry(REGISTRY_URL)
    registry._schemas[1234] = parse_schema(schema_for(model).raw, _write_hint=False)
    data = ConfluentCodec(model, registry).encode_with_id(event, 1234)
    assert data[:5] == b"\x00\x00\x00\x04\xd2"
    assert_same_event(Decoder(model, registry).decode(data), event)


def test_json_timestamps_are_rfc3339_utc() -> None:
    event = models.ReadReceipt(
        message_id="m",
        read_at=datetime(2024, 3, 4, 10, 30, 15, 123456, tzinfo=timezone(timedelta(hours=1))),
    )
    doc = json.loads(JsonCodec(models.ReadReceipt).encode(event))
    assert doc["read_at"].endswith("Z")
    assert datetime.fromisoformat(doc["read_at"]) == T0


# --- property-based round trips -------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
_ids = st.from_regex(r"\A[A-Za-z0-9._:-]{1,64}\Z")
_zones = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=5, minutes=30)),
        timezone(-timedelta(hours=8)),
        timezone(timedelta(hours=14)),
    ]
)
_instants = st.datetimes(
    min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1), timezones=_zones
)
_nhs = (
    st.integers(0, 999_999_999)
    .map(lambda n: f"{n:09d}")
    .filter(lambda p: check_digit(p) is not None)
    .map(lambda p: p + str(check_digit(p)))
)
_long = st.integers(-(2**63), 2**63 - 1)
_rate = st.floats(allow_nan=False, allow_infinity=False)


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


_send_requests = st.builds(
    models.SendRequest,
    message_id=_ids,
    requested_at=_instants,
    ods_code=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=16),
    organisation_type=st.sampled_from(["gp", "other"]),
    nation=st.sampled_from(["england", "wales", "scotland", "northern_ireland"]),
    origin=st.sampled_from(["individual", "batch"]),
    batch_id=_optional(_text),
    message_type=st.sampled_from(["sms", "self_book", "two_factor", "confirmation"]),
    body=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=200),
    patient=st.builds(
        models.Patient,
        nhs_number=_nhs,
        mobile=_optional(_text),
        email=_optional(_text),
        deceased=st.booleans(),
    ),
    email_selected=st.booleans(),
    number_overridden=st.booleans(),
)

_comparisons = st.builds(
    models.PilotMetric,
    kind=st.just("comparison"),
    key=_text,
    message_type=_text,
    horizon_seconds=_long,
    treatment_rate=_optional(_rate),
    control_rate=_optional(_rate),
    difference=_optional(_rate),
    ci_low=_optional(_rate),
    ci_high=_optional(_rate),
    p_value=_optional(_rate),
    method=_text,
    day=_optional(st.dates()),
    updated_at=_instants,
)

_dead_letters = st.builds(
    models.DeadLetter,
    source_topic=_text,
    partition=_long,
    offset=_long,
    key=_optional(_text),
    original=st.binary(max_size=200),
    reason=_text,
    agent=_text,
    occurred_at=_instants,
)


def _round_trips(event: models.Event) -> None:
    model = type(event)
    for codec in ("json", "avro"):
        data = Encoder(model, codec).encode(event)
        assert_same_event(Decoder(model).decode(data), event)


@HYPOTHESIS
@given(_send_requests)
def test_send_request_round_trips_property(event: models.SendRequest) -> None:
    _round_trips(event)


@HYPOTHESIS
@given(_comparisons)
def test_pilot_metric_round_trips_property(event: models.PilotMetric) -> None:
    _round_trips(event)


@HYPOTHESIS
@given(_dead_letters)
def test_dead_letter_round_trips_property(event: models.DeadLetter) -> None:
    _round_trips(event)


# --- fixed bytes from the Avro specification -------------------------------------------------

_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO exactly as the Avro specification's reference code computes it."""
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_crc64_avro_of_null_schema() -> None:
    expected = 7195948357588979594
    assert _crc64_avro(b'"null"') == expected
    assert expected.to_bytes(8, "little") == bytes.fromhex("8a8f25cce724dd63")
    canonical = to_parsing_canonical_form("null")
    assert canonical == '"null"'
    assert fingerprint(canonical, "CRC-64-AVRO") == "8a8f25cce724dd63"


READ_RECEIPT_CANONICAL = (
    '{"name":"appfirst.v1.ReadReceipt","type":"record","fields":'
    '[{"name":"message_id","type":"string"},{"name":"read_at","type":"long"}]}'
)


def test_our_schema_machinery_fingerprints_like_the_spec() -> None:
    schema = schema_for(models.ReadReceipt)
    assert schema.canonical == READ_RECEIPT_CANONICAL
    expected = _crc64_avro(READ_RECEIPT_CANONICAL.encode("utf-8")).to_bytes(8, "little")
    assert schema.fingerprint == expected
    assert schema.fingerprint.hex() == fingerprint(READ_RECEIPT_CANONICAL, "CRC-64-AVRO")


def _zigzag_varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        low, z = z & 0x7F, z >> 7
        if not z:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


# message_id "m-1": length 3 -> zigzag 6 -> 06, then UTF-8 6d 2d 31.
# read_at 2024-01-02T03:04:05.678Z = 1704164645678 ms -> zigzag 3408329291356
#   = 7-bit groups (low first) 5c 6c 06 02 19 63 -> with continuation bits dc ec 86 82 99 63.
READ_RECEIPT_BODY = bytes.fromhex("066d2d31dcec86829963")
READ_RECEIPT = models.ReadReceipt(
    message_id="m-1", read_at=datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
)


def test_hand_encoded_body_agrees_with_the_spec_rules() -> None:
    assert int(READ_RECEIPT.read_at.timestamp() * 1000) == 1704164645678
    assert _zigzag_varint(3) + b"m-1" + _zigzag_varint(1704164645678) == READ_RECEIPT_BODY


def test_single_object_bytes_are_exact() -> None:
    fp = _crc64_avro(READ_RECEIPT_CANONICAL.encode("utf-8")).to_bytes(8, "little")
    expected = b"\xc3\x01" + fp + READ_RECEIPT_BODY
    assert AvroSingleObjectCodec(models.ReadReceipt).encode(READ_RECEIPT) == expected
    assert Encoder(models.ReadReceipt, "avro").encode(READ_RECEIPT) == expected
    assert Decoder(models.ReadReceipt).decode(expected) == READ_RECEIPT


# --- Confluent wire format -------------------------------------------------------------------


def _registry_with(schema_id: int, raw: Any) -> SchemaRegistry:
    registry = SchemaRegistry(REGISTRY_URL)
    registry._schemas[schema_id] = parse_schema(raw, _write_hint=False)
    return registry


def test_confluent_decodes_with_a_cached_schema() -> None:
    registry = _registry_with(0x01020304, schema_for(models.ReadReceipt).raw)
    data = b"\x00\x01\x02\x03\x04" + READ_RECEIPT_BODY
    assert encoding_of(data) == "confluent"
    assert Decoder(models.ReadReceipt, registry).decode(data) == READ_RECEIPT


async def test_prepare_uses_the_cache_without_network() -> None:
    registry = _registry_with(7, schema_for(models.ReadReceipt).raw)
    decoder = Decoder(models.ReadReceipt, registry)
    data = b"\x00\x00\x00\x00\x07" + READ_RECEIPT_BODY
    await decoder.prepare(data)
    assert decoder.decode(data) == READ_RECEIPT


def test_confluent_resolves_a_different_writer_schema() -> None:
    # An upstream producer's own version: an extra field, the fields reordered.
    writer = {
        "type": "record",
        "name": "ReadReceipt",
        "namespace": "appfirst.v1",
        "fields": [
            {"name": "source", "type": "string"},
            {"name": "read_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "message_id", "type": "string"},
        ],
    }
    buf = io.BytesIO()
    schemaless_writer(
        buf,
        parse_schema(writer),
        {"source": "nhs_app", "read_at": READ_RECEIPT.read_at, "message_id": "m-1"},
    )
    registry = _registry_with(9, writer)
    data = b"\x00\x00\x00\x00\x09" + buf.getvalue()
    assert Decoder(models.ReadReceipt, registry).decode(data) == READ_RECEIPT


def test_confluent_without_registry_is_a_clear_decode_error() -> None:
    data = b"\x00\x00\x00\x00\x07" + READ_RECEIPT_BODY
    with pytest.raises(DecodeError) as exc:
        Decoder(models.ReadReceipt).decode(data)
    assert "no schema registry" in exc.value.reason
    assert exc.value.codec == "confluent"


def test_confluent_with_an_unfetched_id_is_unknown_schema() -> None:
    registry = _registry_with(7, schema_for(models.ReadReceipt).raw)
    with pytest.raises(UnknownSchemaError) as exc:
        Decoder(models.ReadReceipt, registry).decode(b"\x00\x00\x00\x00\x08" + READ_RECEIPT_BODY)
    assert "8" in exc.value.reason


def test_confluent_header_too_short() -> None:
    registry = _registry_with(7, schema_for(models.ReadReceipt).raw)
    with pytest.raises(DecodeError):
        Decoder(models.ReadReceipt, registry).decode(b"\x00\x00\x07")


# --- detection ---------------------------------------------------------------------------------

_JSON = JsonCodec(models.ReadReceipt).encode(READ_RECEIPT)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_JSON, "json"),
        (b" \t\r\n" + _JSON, "json"),
        (b"\xef\xbb\xbf" + _JSON, "json"),
        (b"\xc3\x01" + b"\x00" * 8, "avro"),
        (b"\x00\x00\x00\x00\x01", "confluent"),
    ],
    ids=["json", "json-whitespace", "json-bom", "avro", "confluent"],
)
def test_encoding_of(data: bytes, expected: str) -> None:
    assert encoding_of(data) == expected


@pytest.mark.parametrize(
    "data",
    [_JSON, b"\n  " + _JSON, b"\xef\xbb\xbf" + _JSON, b"\xef\xbb\xbf \n" + _JSON],
    ids=["plain", "whitespace", "bom", "bom-whitespace"],
)
def test_decoder_reads_json_variants(data: bytes) -> None:
    assert Decoder(models.ReadReceipt).decode(data) == READ_RECEIPT


@pytest.mark.parametrize(
    "data",
    [b"\xc3", b"\xc3\x02abcdefgh", b"hello", b"\x01\x02", b"\xff\xfe{}", b"\xef\xbb", b""],
    ids=["half-magic", "wrong-magic", "text", "binary", "utf16-bom", "half-bom", "empty"],
)
def test_garbage_is_not_any_encoding(data: bytes) -> None:
    with pytest.raises(DecodeError):
        encoding_of(data)
    with pytest.raises(DecodeError):
        Decoder(models.ReadReceipt).decode(data)


@pytest.mark.parametrize("data", [b"", None], ids=["empty", "tombstone"])
def test_empty_value_is_a_decode_error(data: bytes | None) -> None:
    with pytest.raises(DecodeError) as exc:
        Decoder(models.ReadReceipt).decode(data)
    assert "empty" in exc.value.reason


# --- Avro failures -------------------------------------------------------------------------------

_AVRO = AvroSingleObjectCodec(models.ReadReceipt).encode(READ_RECEIPT)


@pytest.mark.parametrize("cut", range(1, len(READ_RECEIPT_BODY) + 1))
def test_truncated_avro_body(cut: int) -> None:
    with pytest.raises(DecodeError) as exc:
        Decoder(models.ReadReceipt).decode(_AVRO[:-cut])
    assert exc.value.codec == "avro"


@pytest.mark.parametrize("length", range(10))
def test_truncated_avro_header(length: int) -> None:
    with pytest.raises(DecodeError):
        AvroSingleObjectCodec(models.ReadReceipt).decode(_AVRO[:length])


def test_unknown_fingerprint() -> None:
    data = b"\xc3\x01" + bytes.fromhex("0123456789abcdef") + READ_RECEIPT_BODY
    with pytest.raises(UnknownSchemaError) as exc:
        Decoder(models.ReadReceipt).decode(data)
    assert "0123456789abcdef" in exc.value.reason
    assert exc.value.codec == "avro"


def test_avro_record_of_another_event_type() -> None:
    response = models.Response(message_id="m-1", responded_at=READ_RECEIPT.read_at)
    data = AvroSingleObjectCodec(models.Response).encode(response)
    with pytest.raises(DecodeError) as exc:
        Decoder(models.ReadReceipt).decode(data)
    assert not isinstance(exc.value, UnknownSchemaError)
    assert "Response" in exc.value.reason and "ReadReceipt" in exc.value.reason


def _avro_single_object(model: type[models.Event], record: dict[str, Any]) -> bytes:
    schema = schema_for(model)
    buf = io.BytesIO()
    schemaless_writer(buf, schema.parsed, record)
    return b"\xc3\x01" + schema.fingerprint + buf.getvalue()


def _raw_read_receipt_body(read_at_millis: int) -> bytes:
    writer = parse_schema(
        {
            "type": "record",
            "name": "R",
            "fields": [
                {"name": "message_id", "type": "string"},
                {"name": "read_at", "type": "long"},
            ],
        }
    )
    buf = io.BytesIO()
    schemaless_writer(buf, writer, {"message_id": "m-1", "read_at": read_at_millis})
    return buf.getvalue()


_OUT_OF_RANGE_MILLIS = [
    253_402_300_800_000,  # 10000-01-01T00:00:00Z: past datetime.max
    -62_135_596_800_001,  # just before 0001-01-01T00:00:00Z
    2**62,
    2**63 - 1,
]


@pytest.mark.parametrize("millis", _OUT_OF_RANGE_MILLIS)
def test_avro_timestamp_out_of_range_is_a_decode_error(millis: int) -> None:
    # A corrupt or hostile record must be dead-lettered (DecodeError), not crash the agent.
    header = b"\xc3\x01" + schema_for(models.ReadReceipt).fingerprint
    with pytest.raises(DecodeError):
        Decoder(models.ReadReceipt).decode(header + _raw_read_receipt_body(millis))


@pytest.mark.parametrize("millis", _OUT_OF_RANGE_MILLIS)
def test_confluent_timestamp_out_of_range_is_a_decode_error(millis: int) -> None:
    registry = _registry_with(7, schema_for(models.ReadReceipt).raw)
    data = b"\x00\x00\x00\x00\x07" + _raw_read_receipt_body(millis)
    with pytest.raises(DecodeError):
        Decoder(models.ReadReceipt, registry).decode(data)


def test_bad_enum_index_and_bad_utf8_are_decode_errors() -> None:
    header = b"\xc3\x01" + schema_for(models.DeliveryReceipt).fingerprint
    # message_id "m", channel index 9 (only 3 symbols)
    with pytest.raises(DecodeError):
        Decoder(models.DeliveryReceipt).decode(header + b"\x02m" + b"\x12" + b"\x00" * 8)
    header = b"\xc3\x01" + schema_for(models.ReadReceipt).fingerprint
    with pytest.raises(DecodeError):
        Decoder(models.ReadReceipt).decode(header + b"\x04\xff\xfe" + b"\x02")


BAD_NHS = "943476591" + str((int(NHS[9]) + 1) % 10)


def test_avro_record_failing_validation_names_the_field_not_the_value() -> None:
    record = FULL[0].model_dump()
    record["patient"]["nhs_number"] = BAD_NHS
    with pytest.raises(DecodeError) as exc:
        Decoder(models.SendRequest).decode(_avro_single_object(models.SendRequest, record))
    assert "patient.nhs_number" in exc.value.reason
    assert BAD_NHS not in exc.value.reason
    assert exc.value.codec == "avro"


# --- JSON failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"[1, 2]",
        b" [1, 2]",
        b' "a string"',
        b" 42",
        b" null",
        b" true",
        b"{",
        b"{}",
        b'{"message_id": "m"} trailing',
        b'{"message_id": "\xff\xfe", "read_at": 0}',
    ],
    ids=[
        "array",
        "ws-array",
        "string",
        "number",
        "null",
        "true",
        "unterminated",
        "empty-object",
        "trailing",
        "bad-utf8",
    ],
)
def test_json_that_is_not_a_valid_object(data: bytes) -> None:
    with pytest.raises(DecodeError):
        Decoder(models.ReadReceipt).decode(data)


def _send_request_json(**changes: Any) -> dict[str, Any]:
    doc = json.loads(JsonCodec(models.SendRequest).encode(FULL[0]))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = doc
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return doc


@pytest.mark.parametrize(
    ("changes", "field", "secret"),
    [
        ({"patient__nhs_number": BAD_NHS}, "patient.nhs_number", BAD_NHS),
        ({"patient__nhs_number": "943-476-5919"}, "patient.nhs_number", "943-476-5919"),
        ({"patient__nhs_number": 9434765918}, "patient.nhs_number", "9434765918"),
        ({"patient__mobile": 7700900123}, "patient.mobile", "7700900123"),
        ({"message_id": "Jane Smith 07700900123"}, "message_id", "07700900123"),
        ({"requested_at": "Jane Smith 1980-05-06"}, "requested_at", "Jane Smith"),
        ({"requested_at": "2024-03-04T09:30:15"}, "requested_at", "2024-03-04T09:30:15"),
        ({"origin": "Jane Smith"}, "origin", "Jane Smith"),
        ({"body": ""}, "body", '""'),
        ({"email_selected": "Jane Smith"}, "email_selected", "Jane Smith"),
        ({"patient__deceased": "SecretValue42"}, "patient.deceased", "SecretValue42"),
    ],
    ids=[
        "nhs-check-digit",
        "nhs-format",
        "nhs-as-int",
        "mobile-as-int",
        "message-id",
        "timestamp",
        "naive-timestamp",
        "enum",
        "empty-body",
        "bool",
        "nested-bool",
    ],
)
def test_json_validation_error_names_the_field_never_the_value(
    changes: dict[str, Any], field: str, secret: str
) -> None:
    data = json.dumps(_send_request_json(**changes)).encode("utf-8")
    with pytest.raises(DecodeError) as exc:
        Decoder(models.SendRequest).decode(data)
    reason = exc.value.reason
    assert field in reason
    assert secret not in reason
    assert str(exc.value) == reason
    assert exc.value.codec == "json"


def test_json_missing_field_is_named() -> None:
    doc = _send_request_json()
    del doc["patient"]
    with pytest.raises(DecodeError) as exc:
        Decoder(models.SendRequest).decode(json.dumps(doc).encode())
    assert "patient" in exc.value.reason


def test_pilot_metric_kind_rule_reported_without_values() -> None:
    doc = json.loads(JsonCodec(models.PilotMetric).encode(FULL[8]))
    doc["arm"] = None
    doc["key"] = "SecretKey"
    with pytest.raises(DecodeError) as exc:
        Decoder(models.PilotMetric).decode(json.dumps(doc).encode())
    assert "arm" in exc.value.reason
    assert "SecretKey" not in exc.value.reason
