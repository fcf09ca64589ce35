"""Logging for every appfirst process: one JSON object per line on stderr.

Each line has ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, then any
``extra`` fields (``message_id``, ``reference``, ``topic``...). Every record passes through
:class:`RedactFilter` first, whichever library wrote it.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from appfirst.redact import redact

# Identifiers we log on purpose: never masked, even if one happens to look like a number.
KEPT = frozenset({"message_id", "reference"})
_STANDARD = frozenset(RESERVED_ATTRS) | {"message", "asctime"}


class RedactFilter(logging.Filter):
    """Masks NHS numbers, UK phone numbers and emails in a record's message, arguments,
    extra fields and traceback, before any formatter sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):
            record.msg = {k: _clean(k, v) for k, v in record.msg.items()}
        else:
            if isinstance(record.args, tuple):
                # A record's bytes are an event's payload: its size is all a log needs.
                record.args = tuple(_sized(a) for a in record.args)
            try:
                message = record.getMessage()
            except Exception:  # a bad format string must not lose the line
                message = f"{record.msg} {record.args}"
            record.msg, record.args = redact(message), None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, _clean(key, value))
        return True


def _sized(arg: object) -> object:
    if isinstance(arg, bytes | bytearray | memoryview):
        return f"<{len(arg)} bytes>"
    return arg


def _clean(key: str, value: Any) -> Any:
    if key in KEPT or isinstance(value, bool | int | float) or value is None:
        return value
    return redact(value if isinstance(value, str) else str(_sized(value)))


class Formatter(JsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        # Time first: the field people and tools sort by.
        at = datetime.fromtimestamp(record.created, UTC)
        log_data["time"] = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        super().add_fields(log_data, record, message_dict)


def config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dictionary; the worker hands it to Faust too, which
    would otherwise install its own coloured text handler."""
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    quiet = max(number, logging.WARNING)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactFilter}},
        "formatters": {"json": {"()": Formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json",
                "filters": ["redact"],
            }
        },
        "root": {"level": number, "handlers": ["stderr"]},
        # httpx logs every request at info: one line per message sent and per callback.
        # Our own lines already say what matters; its lines come back with debug.
        "loggers": {"httpx": {"level": number if number <= logging.DEBUG else quiet}},
    }


def configure(level: str) -> None:
    logging.config.dictConfig(config(level))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    # A crash's traceback goes out as a JSON line too, and through the filter.
    logging.getLogger("appfirst").critical("uncaught %s", kind.__name__, exc_info=(kind, exc, tb))
