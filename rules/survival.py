"""Time to read and time to respond, with censoring; and the deadline tuning curve.

A message not yet read is not "never read": it is censored at the time we last looked.
Kaplan-Meier (``scipy.stats.ecdf`` on censored data) uses both kinds of observation. The
tuning curve asks, for a candidate fallback deadline D, what share of NHS App messages
would still be unread at D (so would need the fallback SMS): the Kaplan-Meier survival of
time to read at D, and the SMS fragments and cost that implies.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import CensoredData, ecdf

MINUTE = 60
HOUR = 3600
# 15 minutes to 24 hours: the range a practice could sensibly choose from.
CANDIDATE_DEADLINES: tuple[int, ...] = (
    15 * MINUTE,
    30 * MINUTE,
    HOUR,
    2 * HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    24 * HOUR,
)


@dataclass(frozen=True)
class Curve:
    """A survival curve: the share still waiting (unread, no response) at each time."""

    times: tuple[float, ...]
    survival: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    observed: int  # events seen
    censored: int  # still waiting when last looked

    def at(self, t: float) -> float:
        """Survival at ``t`` (a step function, right-continuous; 1 before the first event)."""
        index = int(np.searchsorted(self.times, t, side="right")) - 1
        return 1.0 if index < 0 else self.survival[index]


def kaplan_meier(observations: Sequence[tuple[float, bool]]) -> Curve | None:
    """(duration in seconds, event observed) pairs; None without any event."""
    done = [d for d, seen in observations if seen]
    waiting = [d for d, seen in observations if not seen]
    if not done:
        return None
    result = ecdf(CensoredData(uncensored=done, right=waiting))
    with warnings.catch_warnings():
        # Greenwood's variance divides by zero once the curve reaches 0; the band is then
        # undefined there and shown as [0, 1].
        warnings.simplefilter("ignore", RuntimeWarning)
        band = result.sf.confidence_interval(0.95)
    return Curve(
        times=tuple(float(t) for t in result.sf.quantiles),
        survival=tuple(float(p) for p in result.sf.probabilities),
        low=tuple(float(p) for p in np.nan_to_num(band.low.probabilities, nan=0.0)),
        high=tuple(float(p) for p in np.nan_to_num(band.high.probabilities, nan=1.0)),
        observed=len(done),
        censored=len(waiting),
    )


@dataclass(frozen=True)
class TuningPoint:
    deadline_seconds: int
    fallback_share: float  # of NHS App messages, unread at the deadline
    fallback_sms: float  # expected fallback SMS for the messages counted
    fragments: float
    cost: float  # in the currency of the fragment price


def deadline_curve(
    time_to_read: Curve,
    *,
    messages: int,
    fragments_per_sms: float,
    price_per_fragment: float,
    deadlines: Sequence[int] = CANDIDATE_DEADLINES,
) -> list[TuningPoint]:
    points = []
    for deadline in deadlines:
        share = time_to_read.at(deadline)
        sms = share * messages
        fragments = sms * fragments_per_sms
        points.append(TuningPoint(deadline, share, sms, fragments, fragments * price_per_fragment))
    return points
