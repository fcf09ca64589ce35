"""Kaplan-Meier with censoring, and the deadline tuning curve built on it."""

from __future__ import annotations

import pytest

from appfirst.rules.survival import CANDIDATE_DEADLINES, deadline_curve, kaplan_meier


def test_without_censoring_it_is_the_empirical_survival() -> None:
    curve = kaplan_meier([(10, True), (20, True), (30, True), (40, True)])
    assert curve is not None
    assert curve.survival == (0.75, 0.5, 0.25, 0.0)
    assert curve.at(5) == 1.0 and curve.at(20) == 0.5 and curve.at(25) == 0.5


def test_censored_messages_count_only_while_observed() -> None:
    # Textbook case: events at 1, 2, 3; censored at 2.5 and 4.
    # S(1) = 4/5, S(2) = 4/5 * 3/4 = 0.6, S(3) = 0.6 * 1/2 = 0.3.
    curve = kaplan_meier([(1, True), (2, True), (2.5, False), (3, True), (4, False)])
    assert curve is not None
    assert curve.at(1) == pytest.approx(0.8)
    assert curve.at(2.7) == pytest.approx(0.6)
    assert curve.at(3) == pytest.approx(0.3)
    assert (curve.observed, curve.censored) == (3, 2)
    # Treating the censored as never read would overstate survival at 3: 2/5 = 0.4.
    assert curve.at(3) < 0.4


def test_no_event_gives_no_curve() -> None:
    assert kaplan_meier([(100, False)]) is None


def test_the_interval_brackets_the_estimate() -> None:
    curve = kaplan_meier([(t, t % 3 != 0) for t in range(1, 60)])
    assert curve is not None
    for low, s, high in zip(curve.low, curve.survival, curve.high, strict=True):
        assert low <= s <= high


def test_a_longer_deadline_never_needs_more_fallbacks() -> None:
    reads = [(m * 60.0, True) for m in range(5, 600, 7)] + [(86_400.0 * 2, False)] * 40
    curve = kaplan_meier(reads)
    assert curve is not None
    points = deadline_curve(curve, messages=1000, fragments_per_sms=1.4, price_per_fragment=0.02)
    assert [p.deadline_seconds for p in points] == list(CANDIDATE_DEADLINES)
    shares = [p.fallback_share for p in points]
    assert shares == sorted(shares, reverse=True)
    one_hour = points[CANDIDATE_DEADLINES.index(3600)]
    assert one_hour.fallback_sms == pytest.approx(curve.at(3600) * 1000)
    assert one_hour.cost == pytest.approx(one_hour.fallback_sms * 1.4 * 0.02)
