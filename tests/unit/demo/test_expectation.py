"""The demo's check of its own figures: the response rate the scenario implies for the
messages an arm's published rate counted, and how far the published rate may be from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from appfirst.demo.summary import Expectation, Tally, expected_rate
from appfirst.providers.published_pilot import (
    expected_app,
    expected_response,
    expected_text,
    published_scenario,
)
from appfirst.rules.routing import Deadlines
from appfirst.topics.models import DeadLetter, Dispatch, PilotMetric

SC = published_scenario()
T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
SCALE = 120.0
DEADLINES = Deadlines(individual=30, bp_monitoring=90, batch=45)  # the demo's, real seconds


def dispatch(n: int, arm: str, channel: str, message_type: str, after: float = 0) -> Dispatch:
    return Dispatch(
        message_id=f"m-{n}",
        channel=channel,  # type: ignore[arg-type]
        reason="nhs_app_enabled" if channel == "nhs_app" else "integration_off",
        dispatched_at=T0 + timedelta(seconds=after),
        ods_code="T0000",
        arm=arm,  # type: ignore[arg-type]
        origin="individual",
        message_type=message_type,  # type: ignore[arg-type]
    )


def metric(arm: str, h: int, at: float, sent: int, rate: float) -> PilotMetric:
    return PilotMetric(
        kind="arm_rate",
        key=f"arm_rate|{arm}|all|{h}",
        arm=arm,  # type: ignore[arg-type]
        message_type="all",
        horizon_seconds=h,
        sent=sent,
        responded=round(sent * rate),
        response_rate=rate,
        read=0,
        fallbacks=0,
        updated_at=T0 + timedelta(seconds=at),
    )


def test_a_text_is_answered_as_the_scenario_says_and_an_email_never() -> None:
    h = 3600.0
    assert expected_response(SC, "questionnaire", "sms", h) == expected_text(SC, "questionnaire", h)
    assert expected_response(SC, "questionnaire", "email", h) == 0.0
    assert expected_response(SC, "confirmation", "sms", h) == 0.0  # takes no answer
    app = expected_response(SC, "questionnaire", "nhs_app", h, deadline=5400)
    assert app == expected_app(SC, "questionnaire", h, 5400)


def test_the_expectation_counts_only_the_messages_the_rate_counted() -> None:
    tally = Tally()
    # Two matured texts of the arm, one of the other arm, one not sent, one too recent.
    for d in (
        dispatch(1, "control", "sms", "questionnaire"),
        dispatch(2, "control", "sms", "confirmation"),
        dispatch(3, "treatment", "sms", "questionnaire"),
        dispatch(4, "control", "none", "questionnaire"),
        dispatch(5, "control", "sms", "questionnaire", after=50),
    ):
        tally.add("dispatches", d)
    tally.add("pilot-metrics", metric("control", 30, at=60, sent=2, rate=0.5))
    e = expected_rate(tally, SC, DEADLINES, "control", 30, SCALE)
    assert e is not None and e.messages == 2
    assert e.rate == pytest.approx(expected_text(SC, "questionnaire", 3600) / 2)
    assert expected_rate(tally, SC, DEADLINES, "treatment", 30, SCALE) is None  # none published


def test_an_nhs_app_message_falls_back_at_its_own_deadline_in_simulated_time() -> None:
    tally = Tally()
    tally.add("dispatches", dispatch(1, "treatment", "nhs_app", "self_book"))
    tally.add("pilot-metrics", metric("treatment", 90, at=200, sent=1, rate=0.0))
    e = expected_rate(tally, SC, DEADLINES, "treatment", 90, SCALE)
    assert e is not None
    assert e.rate == pytest.approx(expected_app(SC, "self_book", 90 * SCALE, 30 * SCALE))


def test_the_tolerance_is_three_standard_errors_and_half_a_point() -> None:
    e = Expectation(0.04, 1300)
    assert e.tolerance() == pytest.approx(3 * (0.04 * 0.96 / 1300) ** 0.5 + 0.005)
    assert e.agrees(0.04 + e.tolerance() - 1e-9)
    assert not e.agrees(0.04 - e.tolerance() - 1e-6)
    # What the backlogged demo showed before responses were timed from the send: 0.2% of
    # 4,523 where the scenario expects several per cent.
    assert not Expectation(0.035, 4523).agrees(0.002)


def test_the_demo_knows_when_the_worker_has_decided_every_request() -> None:
    def dead(key: str, topic: str = "demo.send-requests") -> DeadLetter:
        return DeadLetter(
            source_topic=topic,
            partition=0,
            offset=0,
            key=key,
            original=b"",
            reason="invalid",
            agent="intake",
            occurred_at=T0,
        )

    tally = Tally()
    tally.add("dispatches", dispatch(1, "control", "sms", "questionnaire"))
    tally.add("dead-letter", dead("m-2"))  # a refused request: decided
    tally.add("dead-letter", dead("bad-250"))  # the demo's extra malformed record: not one
    tally.add("dead-letter", dead("m-3", topic="demo.responses"))  # not a request
    assert tally.decided() == 2
    assert sum(tally.dead_letters.values()) == 3
