"""What the log filter masks, and what it must leave alone."""

from __future__ import annotations

import pytest

from appfirst.redact import redact


@pytest.mark.parametrize(
    "secret",
    [
        "9434765919",  # NHS number
        "943 476 5919",
        "943-476-5919",
        "07911 123456",  # UK mobile, as written
        "07911123456",
        "+447911123456",  # E.164
        "+44 7911 123456",
        "447911123456",  # E.164 without the plus
        "020 7946 0000",  # a landline
        "(020) 7946 0000",
        "+44 (0)20 7946 0000",
        "patient12@example.org",
        "first.last+tag@nhs.net",
    ],
)
def test_identifiers_are_masked_wherever_they_stand(secret: str) -> None:
    for text in (secret, f"x={secret}", f"({secret})", f"'{secret}'", f"ends {secret}."):
        masked = redact(text)
        assert secret not in masked, text
        assert "[" in masked


@pytest.mark.parametrize(
    "kept",
    [
        "demo-2025-000123",  # message ids stay
        "o-001",
        "123e4567-e89b-12d3-a456-426614174000",  # a UUID with a 12-digit group
        "offset=1234567",
        "t=1732212345.123",  # epoch seconds as a float
        "0.0001234567",
        "2025-11-21 10:00:00",
        "127.0.0.1:6066",
        "partition=3",
        "A message from your GP practice",
    ],
)
def test_ordinary_values_stay(kept: str) -> None:
    assert redact(kept) == kept


def test_masks_name_what_they_hid() -> None:
    text = "nhs 9434765919 mobile 07911 123456 email a@b.org"
    assert redact(text) == "nhs [number] mobile [phone] email [email]"


def test_record_bytes_in_a_repr_are_left_out() -> None:
    # What Faust logs when a send fails: the pending message, key and value included.
    text = "error message <FutureMessage: key=b'abc' value=b'{\"body\": \"it\\'s your GP\"}'>"
    assert redact(text) == "error message <FutureMessage: key=<bytes> value=<bytes>>"
