"""The synthetic pilot reproduces the published findings, and the analysis recovers them."""

from __future__ import annotations

import math

import pytest

from appfirst.providers.patients import app_outcome, pilot_response, text_outcome
from appfirst.providers.published_pilot import (
    DEADLINE,
    HORIZONS,
    PUBLISHED_EFFECTS,
    READ_MEDIAN_SECONDS,
    RESPONSES,
    TYPES,
    calibrate,
    expected_app,
    expected_effect,
    expected_text,
    published_scenario,
    simulate_practices,
)
from appfirst.rules.stats import compare

SCENARIO = published_scenario()


def test_the_stored_parameters_are_what_calibration_finds() -> None:
    read_median, responses = calibrate()
    assert read_median == pytest.approx(READ_MEDIAN_SECONDS, rel=0.01)
    for message_type, fitted in responses.items():
        stored = RESPONSES[message_type].model_dump()
        for name, value in fitted.model_dump().items():
            assert stored[name] == pytest.approx(value, rel=0.01), (message_type, name)


@pytest.mark.parametrize(("message_type", "horizon"), sorted(PUBLISHED_EFFECTS))
def test_the_expected_curves_show_the_published_effect(message_type: str, horizon: int) -> None:
    effect = expected_effect(SCENARIO, message_type, horizon)
    assert effect == pytest.approx(PUBLISHED_EFFECTS[message_type, horizon], abs=0.002)


@pytest.mark.parametrize("message_type", TYPES)
def test_sampled_patients_follow_the_expected_curves(message_type: str) -> None:
    """The calibration's integrals and the simulator's patients are the same model."""
    n = 20_000
    for by_app, expected in ((True, expected_app), (False, expected_text)):
        times = [
            pilot_response(SCENARIO, f"m{i}", message_type, by_app=by_app, deadline=DEADLINE)
            for i in range(n)
        ]
        for h in HORIZONS:
            p = expected(SCENARIO, message_type, h)
            observed = sum(1 for t in times if t is not None and t <= h) / n
            assert abs(observed - p) < 4 * math.sqrt(p * (1 - p) / n) + 0.002, (by_app, h)


@pytest.mark.parametrize("message_type", TYPES)
def test_the_practice_level_analysis_recovers_the_published_effects(message_type: str) -> None:
    rows = simulate_practices(
        SCENARIO, message_type, practices_per_arm=30, messages_per_practice=400, seed=1
    )
    for horizon, practices in rows.items():
        result = compare(practices)
        assert result is not None
        true_difference = (
            expected_text(SCENARIO, message_type, horizon)
            * PUBLISHED_EFFECTS[message_type, horizon]
        )
        assert result.ci_low <= true_difference <= result.ci_high, horizon
    behind = compare(rows[3600])
    level = compare(rows[3 * 3600])
    assert behind is not None and level is not None
    assert behind.ci_high < 0, "treatment is behind at 60 minutes"
    assert level.ci_low < 0 < level.ci_high, "the arms are level at 3 hours"


def test_a_patient_is_the_same_patient_every_time() -> None:
    first = app_outcome(SCENARIO, "m-1", "self_book")
    assert app_outcome(SCENARIO, "m-1", "self_book") == first
    text = text_outcome(SCENARIO, "m-1/fallback", "self_book")
    assert text_outcome(SCENARIO, "m-1/fallback", "self_book") == text


def test_a_fallback_is_answered_at_its_own_share() -> None:
    shares = {}
    for reference in ("m{}", "m{}/fallback"):
        answered = sum(
            text_outcome(SCENARIO, reference.format(i), "questionnaire").respond_after is not None
            for i in range(20_000)
        )
        shares[reference] = answered / 20_000
    behaviour = RESPONSES["questionnaire"]
    kept = 1 - SCENARIO.sms_failed_share
    assert shares["m{}"] == pytest.approx(behaviour.sms_share * kept, abs=0.015)
    assert shares["m{}/fallback"] == pytest.approx(behaviour.fallback_share * kept, abs=0.015)
