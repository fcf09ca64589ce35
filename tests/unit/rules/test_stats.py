"""The pilot comparison: exact small cases, and a seeded simulation of clustered pilots in
which the cluster-robust 95% interval covers the true difference about 95% of the time
while the naive one, ignoring clustering, does not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appfirst.rules.stats import (
    Practice,
    arm_estimate,
    comparable,
    compare,
    intra_cluster_correlation,
)


def simulate_pilot(
    rng: np.random.Generator, *, per_arm: int, control: float, effect: float, icc: float
) -> tuple[list[Practice], float]:
    """Practices of both arms, and the true difference in response rate."""
    practices: list[Practice] = []
    concentration = (1 - icc) / icc  # Beta(a, b) with a + b = this has correlation icc
    for arm, mean in (("treatment", control + effect), ("control", control)):
        sizes = np.maximum(20, rng.lognormal(np.log(150), 0.6, per_arm).astype(int))
        rates = rng.beta(mean * concentration, (1 - mean) * concentration, per_arm)
        responded = rng.binomial(sizes, rates)
        practices += [
            Practice(arm, int(n), int(y))
            for n, y in zip(sizes, responded, strict=True)  # type: ignore[arg-type]
        ]
    return practices, effect


def test_each_practice_counts_once_in_its_arms_rate() -> None:
    est = arm_estimate([Practice("control", 100, 20), Practice("control", 300, 90)])
    assert est is not None
    assert est.rate == pytest.approx((0.2 + 0.3) / 2)
    assert est.pooled_rate == pytest.approx(110 / 400)
    # practice rates 0.2 and 0.3: sample variance 0.005, over m = 2
    assert est.variance == pytest.approx(0.005 / 2)


def test_one_practice_per_arm_gives_no_comparison() -> None:
    rows = [Practice("treatment", 50, 10), Practice("control", 50, 20), Practice("control", 9, 1)]
    assert compare(rows) is None


def test_identical_practices_have_zero_icc_and_design_effect_one() -> None:
    rows = [Practice(arm, 100, 30) for arm in ("treatment", "control") for _ in range(5)]
    result = compare(rows)
    assert result is not None
    assert result.difference == 0 and result.p_value == 1.0
    assert result.icc == 0.0 and result.design_effect == 1.0


def test_icc_is_high_when_practices_differ_a_lot() -> None:
    rows = [Practice("control", 100, 5), Practice("control", 100, 95)] * 3
    icc = intra_cluster_correlation(rows)
    assert icc is not None and icc > 0.7


def test_a_lopsided_allocation_is_flagged() -> None:
    rows = [Practice("treatment", 100, 30)] * 30 + [Practice("control", 100, 30)] * 8
    result = compare(rows)
    assert result is not None and result.srm_p_value < 0.01


@pytest.mark.parametrize("icc", [0.02, 0.08])
def test_the_interval_covers_the_truth_95_percent_of_1000_clustered_pilots(icc: float) -> None:
    rng = np.random.default_rng(20261121)
    covered = naive_covered = 0
    runs = 1000
    for _ in range(runs):
        practices, truth = simulate_pilot(rng, per_arm=20, control=0.30, effect=-0.06, icc=icc)
        result = compare(practices)
        assert result is not None
        covered += result.ci_low <= truth <= result.ci_high
        naive_covered += result.naive_ci_low <= truth <= result.naive_ci_high
    coverage, naive = covered / runs, naive_covered / runs
    assert 0.93 <= coverage <= 0.97, coverage
    assert naive < 0.85, naive  # ignoring clustering: visibly too narrow


def test_the_difference_is_treatment_minus_control() -> None:
    rows = [Practice("treatment", 100, 10 + i) for i in range(4)]
    rows += [Practice("control", 100, 20 + i) for i in range(4)]
    result = compare(rows)
    assert result is not None
    assert result.difference == pytest.approx(0.115 - 0.215)
    assert result.ci_low < result.difference < result.ci_high
    assert result.relative_difference == pytest.approx(-0.1 / 0.215)
    assert result.method == "practice_level_welch_t"
    assert math.isclose(result.treatment.rate, 0.115)


def _arm(arm: str, *sent: int) -> list[Practice]:
    return [Practice(arm, n, 1 if n else 0) for n in sent]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "practices",
    [
        [],
        [Practice("treatment", 10, 1), Practice("control", 10, 2)],
        [Practice("treatment", 10, 1), Practice("treatment", 8, 1), Practice("control", 10, 2)],
        # A practice with no messages is no observation.
        [*_arm("treatment", 10, 0), *_arm("control", 10, 9)],
        [*_arm("treatment", 10, 8), *_arm("control", 10, 9)],
    ],
)
def test_comparable_says_whether_compare_has_an_answer(practices: list[Practice]) -> None:
    # The worker imports scipy in a thread of its own before the first comparison that
    # needs it: the two must agree.
    assert comparable(practices) == (compare(practices) is not None)
