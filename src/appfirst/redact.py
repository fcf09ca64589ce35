"""Masks what looks like a patient identifier in free text: the last line of defence for
logs. Our own log lines name messages by message_id only; this catches what a library or
an exception message lets through.

Deliberately broad: a stray 10-digit offset or id is masked too. A missed NHS number is
worse than a masked counter.
"""

from __future__ import annotations

import re

_PATTERN = re.compile(
    # A UUID (a message id, a trace id) is kept whole, whatever digit runs it holds.
    r"(?P<uuid>\b[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b)"
    r"|(?P<email>[\w.%+-]+@[\w-]+(?:\.[\w-]+)+)"
    # Preceded by a letter, digit or '.', a run of digits is part of a longer token (an id
    # such as demo-2025-000123 stays; 0.000123 is a float); followed by '.' and a digit too.
    r"|(?<![\w+.])(?:"
    # UK numbers: +44 or 0044 (with an optional (0)), or a leading 0; 10 or 11 digits.
    r"(?P<phone>(?:\+|00)44[ -]?(?:\(0\)[ -]?)?\d(?:[ -]?\d){8,9}"
    r"|\(?0\d{2,4}\)?[ -]?\d{3,4}[ -]?\d{3,4})"
    # NHS numbers (10 digits, maybe spaced 3-3-4), and any longer digit run (E.164 without +).
    r"|(?P<number>\d{3}[ -]?\d{3}[ -]?\d{4}|\d{11,15})"
    r")(?![\w]|\.\d)"
)
_BYTES_FIELD = re.compile(r"\b(k|v|key|value)=b(['\"]).*?(?<!\\)\2", re.DOTALL)
MASKS = {"email": "[email]", "phone": "[phone]", "number": "[number]"}


def _mask(match: re.Match[str]) -> str:
    kind = match.lastgroup or "number"
    return match.group() if kind == "uuid" else MASKS[kind]


def redact(text: str) -> str:
    """``text`` with emails, UK phone numbers, NHS numbers and long digit runs masked, and
    the bytes of a record (``value=b'...'`` in a repr, as Faust logs them) left out."""
    text = _BYTES_FIELD.sub(lambda m: f"{m.group(1)}=<bytes>", text)
    return _PATTERN.sub(_mask, text)
