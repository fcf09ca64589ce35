"""The pilot's comparison, as an analyst would sign it.

Practices, not patients, were randomised, so messages of one practice are not independent:
a practice's patients share a population, a list, a way of working. The primary analysis
therefore uses practice-level summaries (Hayes and Moulton, *Cluster Randomised Trials*):

- each practice's response rate is one observation; an arm's rate is their mean, so every
  randomised unit counts once;
- the difference (treatment minus control) gets a Welch t interval and p-value with
  Satterthwaite degrees of freedom. With tens of practices per arm this holds its nominal
  coverage (tested by simulation); a cluster-robust ratio estimator was tried and covered
  about 94% (CR2) in the same simulation, so it is not used.

Beside it, the naive two-proportion figure (messages as if independent, message-weighted
rates), labelled as such, shows how far clustering moves the answer. Also: the
intra-cluster correlation (ANOVA estimator) and design effect, and a sample ratio mismatch
check on the practices per arm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

ArmName = Literal["treatment", "control"]


@cache
def _sps() -> Any:
    """``scipy.stats``, imported on first use: it takes longer to import than the rest of a
    worker, and a worker needs it only once both arms have two practices with messages
    (every worker start, and every test that starts one, paid for it)."""
    from scipy import stats

    return stats


def load_statistics() -> None:
    """Import what ``compare`` computes with: a worker does it in a thread of its own the
    first time, so that a second of importing does not hold its event loop (the sweep of
    due fallbacks, heartbeats)."""
    _sps()


def comparable(practices: Iterable[Practice]) -> bool:
    """Whether ``compare`` has an answer: each arm has an estimate (``arm_estimate``)."""
    rows = list(practices)
    return all(arm_estimate(p for p in rows if p.arm == arm) for arm in ("treatment", "control"))


METHOD = "practice_level_welch_t"
NAIVE_METHOD = "naive_two_proportion"


@dataclass(frozen=True)
class Practice:
    """One practice's matured counts at one horizon."""

    arm: ArmName
    sent: int
    responded: int


@dataclass(frozen=True)
class ArmEstimate:
    rate: float  # mean of practice rates: the primary analysis
    variance: float  # of that mean: sample variance of practice rates over m
    practices: int
    sent: int
    responded: int

    @property
    def pooled_rate(self) -> float:
        """Message-weighted rate, as in ``arm_rate`` records."""
        return self.responded / self.sent


@dataclass(frozen=True)
class Comparison:
    treatment: ArmEstimate
    control: ArmEstimate
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    naive_ci_low: float
    naive_ci_high: float
    naive_p_value: float
    icc: float | None
    design_effect: float | None
    srm_p_value: float
    method: str = METHOD

    @property
    def relative_difference(self) -> float | None:
        """Treatment relative to control, e.g. -0.48 for "48% lower"."""
        c = self.control.rate
        return self.difference / c if c else None


def arm_estimate(practices: Iterable[Practice]) -> ArmEstimate | None:
    rows = [p for p in practices if p.sent > 0]
    m = len(rows)
    if m < 2:
        return None  # no variance between practices can be estimated from one
    rates = [p.responded / p.sent for p in rows]
    mean = sum(rates) / m
    variance = sum((r - mean) ** 2 for r in rates) / (m - 1) / m
    return ArmEstimate(mean, variance, m, sum(p.sent for p in rows), sum(p.responded for p in rows))


def compare(
    practices: Iterable[Practice], *, confidence: float = 0.95, treatment_share: float = 0.5
) -> Comparison | None:
    """Treatment minus control; None until each arm has two practices with messages."""
    rows = list(practices)
    treatment = arm_estimate(p for p in rows if p.arm == "treatment")
    control = arm_estimate(p for p in rows if p.arm == "control")
    if treatment is None or control is None:
        return None
    difference = treatment.rate - control.rate
    se = math.sqrt(treatment.variance + control.variance)
    df = welch_df(treatment, control)
    quantile = float(_sps().t.ppf(0.5 + confidence / 2, df))
    if se > 0:
        p_value = float(2 * _sps().t.sf(abs(difference) / se, df))
    else:
        p_value = 1.0 if difference == 0 else 0.0
    naive_low, naive_high, naive_p = naive_two_proportion(treatment, control, confidence)
    icc = intra_cluster_correlation(rows)
    mean_size = (treatment.sent + control.sent) / (treatment.practices + control.practices)
    units = treatment.practices + control.practices
    srm = _sps().binomtest(treatment.practices, units, treatment_share).pvalue
    return Comparison(
        treatment=treatment,
        control=control,
        difference=difference,
        ci_low=difference - quantile * se,
        ci_high=difference + quantile * se,
        p_value=p_value,
        naive_ci_low=naive_low,
        naive_ci_high=naive_high,
        naive_p_value=naive_p,
        icc=icc,
        design_effect=None if icc is None else 1 + (mean_size - 1) * icc,
        srm_p_value=float(srm),
    )


def welch_df(treatment: ArmEstimate, control: ArmEstimate) -> float:
    """Satterthwaite degrees of freedom of the difference of two means."""
    vt, vc = treatment.variance, control.variance
    if vt + vc == 0:
        return float(treatment.practices + control.practices - 2)
    return (vt + vc) ** 2 / (vt**2 / (treatment.practices - 1) + vc**2 / (control.practices - 1))


def naive_two_proportion(
    treatment: ArmEstimate, control: ArmEstimate, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(low, high, p) treating every message as independent: NOT the primary analysis."""
    p1, n1 = treatment.pooled_rate, treatment.sent
    p2, n2 = control.pooled_rate, control.sent
    diff = p1 - p2
    z = float(_sps().norm.ppf(0.5 + confidence / 2))
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    pooled = (treatment.responded + control.responded) / (n1 + n2)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p_value = float(2 * _sps().norm.sf(abs(diff) / se0)) if se0 > 0 else 1.0
    return diff - z * se, diff + z * se, p_value


def intra_cluster_correlation(practices: Iterable[Practice]) -> float | None:
    """One-way ANOVA estimator of the ICC of responding, within arms; floored at 0."""
    by_arm: dict[str, list[Practice]] = {}
    for p in practices:
        if p.sent > 0:
            by_arm.setdefault(p.arm, []).append(p)
    k = sum(len(rows) for rows in by_arm.values())
    total = sum(p.sent for rows in by_arm.values() for p in rows)
    groups = len(by_arm)
    if k - groups < 1 or total - k < 1:
        return None
    between = 0.0
    within = 0.0
    size_term = 0.0
    for rows in by_arm.values():
        arm_sent = sum(p.sent for p in rows)
        arm_rate = sum(p.responded for p in rows) / arm_sent
        for p in rows:
            rate = p.responded / p.sent
            between += p.sent * (rate - arm_rate) ** 2
            within += p.responded - p.responded**2 / p.sent  # sum of squares of 0/1 values
        size_term += sum(p.sent**2 for p in rows) / arm_sent
    msb = between / (k - groups)
    msw = within / (total - k)
    n0 = (total - size_term) / (k - groups)
    denominator = msb + (n0 - 1) * msw
    if denominator <= 0:
        return None
    return max(0.0, (msb - msw) / denominator)
