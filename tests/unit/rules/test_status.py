"""What the practice sees of a message (rules/status.py), in any order of facts."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import reduce
from itertools import permutations
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appfirst.rules.status import (
    Track,
    finished,
    on_dispatch,
    on_read,
    on_receipt,
    on_sent,
    outcome,
    shown,
)

Fact = Any


def play(*facts: Fact, batch: str | None = None) -> Track:
    return reduce(lambda t, f: f(t), facts, Track(seen_at=0.0))


def dispatched(channel: str, reason: str = "r", batch: str | None = "b1") -> Fact:
    return lambda t: on_dispatch(t, channel, reason, batch)


def receipt(channel: str, status: str, leg: str = "primary") -> Fact:
    return lambda t: on_receipt(t, channel, status, leg)


def test_an_nhs_app_message_shows_sent_to_the_nhs_app_and_nothing_later() -> None:
    t = play(dispatched("nhs_app"), on_sent)
    assert shown(t) == ("sent", "sent - To: NHS App", None)
    later = play(
        dispatched("nhs_app"),
        on_sent,
        receipt("nhs_app", "delivered"),
        on_read,
        receipt("sms", "permanent_failure", "fallback"),
    )
    assert shown(later) == shown(t), "no update for delivery, reading or the backup SMS"


def test_an_sms_shows_sent_then_delivered_or_failed() -> None:
    assert shown(play(dispatched("sms"), on_sent))[:2] == ("sent", "sent - To: SMS")  # type: ignore[index]
    assert shown(play(dispatched("sms"), on_sent, receipt("sms", "delivered")))[0] == "delivered"  # type: ignore[index]
    failed = play(dispatched("sms"), on_sent, receipt("sms", "temporary_failure"))
    assert shown(failed) == ("failed", "Failed to deliver", "temporary_failure")


def test_an_email_is_sent_and_no_more() -> None:
    assert shown(play(dispatched("email"), on_sent)) == ("sent", "sent - To: email", None)
    assert outcome(play(dispatched("email"), on_sent)) == "sent"


def test_not_sent_with_the_routing_reason() -> None:
    t = play(dispatched("none", "not_uk_mobile"))
    assert shown(t) == ("not_sent", "Not sent", "not_uk_mobile")
    assert outcome(t) == "not_sent"
    assert finished(replace(t, counted=True))


def test_nothing_shown_before_the_dispatch() -> None:
    assert shown(play(on_sent, receipt("sms", "delivered"))) is None
    assert not finished(play(on_sent))


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ((dispatched("nhs_app"), on_sent, receipt("nhs_app", "delivered")), "delivered"),
        ((dispatched("nhs_app"), on_sent, on_read), "delivered"),
        ((dispatched("nhs_app"), on_sent, receipt("nhs_app", "failed")), None),
        (
            (
                dispatched("nhs_app"),
                receipt("nhs_app", "failed"),
                receipt("sms", "delivered", "fallback"),
            ),
            "delivered",
        ),
        (
            (
                dispatched("nhs_app"),
                receipt("nhs_app", "failed"),
                receipt("sms", "permanent_failure", "fallback"),
            ),
            "failed",
        ),
        ((dispatched("sms"), on_sent), None),
    ],
)
def test_what_the_batch_counts(facts: tuple[Fact, ...], expected: str | None) -> None:
    assert outcome(play(*facts)) == expected


def test_order_does_not_matter() -> None:
    facts = (dispatched("sms"), on_sent, receipt("sms", "delivered"))
    results = {(shown(play(*p)), outcome(play(*p))) for p in permutations(facts)}
    assert results == {(("delivered", "Delivered", None), "delivered")}


def test_rows_end_once_nothing_can_change() -> None:
    assert finished(play(dispatched("nhs_app", batch=None), on_sent))
    assert not finished(play(dispatched("nhs_app"), on_sent)), "its batch still waits"
    assert not finished(play(dispatched("sms", batch=None), on_sent)), "its receipt is to come"
    assert finished(play(dispatched("sms", batch=None), on_sent, receipt("sms", "delivered")))


def test_a_track_survives_encoding() -> None:
    t = play(dispatched("sms"), on_sent, receipt("sms", "technical_failure"))
    assert Track.from_part(json.loads(json.dumps(t.to_part()))) == t


@settings(max_examples=500)
@given(
    # 2017 to 2100 in whole microseconds (exact both ways there; not near 2**52 us, 2112).
    st.integers(1_500_000_000_000_000, 4_102_444_800_000_000).map(lambda us: us / 1e6),
    st.integers(0, 63),
    st.lists(st.booleans(), min_size=5, max_size=5),
    st.lists(st.one_of(st.none(), st.text(max_size=12)), min_size=5, max_size=5),
)
def test_every_track_survives_its_compact_part(
    seen_at: float, partition: int, flags: list[bool], texts: list[str | None]
) -> None:
    names = ("dispatched", "sent", "delivered", "counted", "closed")
    t = Track(
        seen_at,
        partition,
        **dict(zip(names, flags, strict=True)),
        **dict(zip(("channel", "reason", "shown", "batch_id", "failed"), texts, strict=True)),
    )
    part = json.loads(json.dumps(t.to_part()))
    assert Track.from_part(part) == t
    assert Track.from_part(part).to_part() == part


def test_a_pending_nhs_app_message_takes_few_bytes() -> None:
    t = play(dispatched("nhs_app"), on_sent)
    t = replace(t, seen_at=1_765_105_000.123456, partition=3, shown="sent")
    assert len(json.dumps(t.to_part(), separators=(",", ":"))) <= 60


def test_the_stored_form_is_fixed() -> None:
    # Rows written by one version are read by the next: this is the format, field by field.
    t = Track(1_765_105_000.5, 7, "sms", "b9", True, "r", True, False, "permanent_failure")
    t = replace(t, counted=True, shown="failed")
    assert t.to_part() == [
        1_765_105_000_500_000,
        7,
        0b1011,
        "sms",
        "r",
        "failed",
        "b9",
        "permanent_failure",
    ]


def test_a_closed_message_keeps_only_that_it_is_finished() -> None:
    from appfirst.rules.status import closed

    t = play(dispatched("sms", batch=None), on_sent, receipt("sms", "delivered"))
    mark = closed(t, 123.0)
    assert mark.closed and mark.shown is None and mark.seen_at == 123.0
    assert Track.from_part(mark.to_part()) == mark
