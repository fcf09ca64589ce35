"""The log line: one JSON object, its fields, and the filter in front of the formatter."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator
from typing import Any

import pytest

from appfirst import logs


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.Formatter())
    handler.addFilter(logs.RedactFilter())
    logger = logging.getLogger("appfirst.test-json-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def _records(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_has_time_level_logger_message_and_extras(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = lines
    logger.info("fallback message_id=%s", "m-1", extra={"message_id": "m-1", "reason": "unread"})
    [record] = _records(out)
    assert list(record)[:4] == ["time", "level", "logger", "message"]
    assert record["time"].endswith("Z") and "T" in record["time"]
    assert record["level"] == "INFO"
    assert record["logger"] == "appfirst.test-json-logs"
    assert record["message"] == "fallback message_id=m-1"
    assert record["message_id"] == "m-1" and record["reason"] == "unread"


def test_identifiers_are_masked_in_message_args_extras_and_tracebacks(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = lines
    logger.warning(
        "patient %s at %s",
        "9434765919",
        "07911 123456",
        extra={"email": "a.patient@example.org", "message_id": "4340123456"},
    )
    try:
        raise ValueError("input_value='+447911123456'")
    except ValueError:
        logger.exception("lookup failed for %s", b"raw payload 9434765919")
    first, second = _records(out)
    assert first["message"] == "patient [number] at [phone]"
    assert first["email"] == "[email]"
    assert first["message_id"] == "4340123456"  # a message id is kept whatever it looks like
    assert second["message"] == "lookup failed for <22 bytes>"
    assert "+447911123456" not in second["exception"]
    assert "ValueError" in second["exception"]


def test_a_bad_format_string_still_gives_a_line(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = lines
    logger.info("two %s %s", "9434765919")
    [record] = _records(out)
    assert "9434765919" not in record["message"]


def test_config_wires_formatter_and_filter_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logging.config.dictConfig(logs.config("warning"))
        logging.getLogger("faust.topics").warning("send: k=%r v=%r", b"9434765919", b"body")
        logging.getLogger("appfirst.x").info("not shown at warning")
        err = capsys.readouterr().err.splitlines()
    finally:
        root.handlers[:], root.level = saved
    [line] = err
    record = json.loads(line)
    assert record["level"] == "WARNING"
    assert record["message"] == "send: k='<10 bytes>' v='<4 bytes>'"


def test_httpx_request_lines_only_at_debug() -> None:
    assert logs.config("info")["loggers"]["httpx"]["level"] == logging.WARNING
    assert logs.config("debug")["loggers"]["httpx"]["level"] == logging.DEBUG
    with pytest.raises(ValueError, match="unknown log level"):
        logs.config("loud")
