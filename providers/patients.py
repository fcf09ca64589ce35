"""What a simulated patient does with a message: a pure function of the scenario and the
message's reference, so the simulator, the published-pilot calibration and the tests all
see the same patients.

Times are simulated seconds (the simulator divides them by ``Scenario.time_scale``). Each
outcome draws all its random numbers up front, in a fixed order, from the reference's own
generator: a leg behaves the same whichever way it ends and however often it is asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from appfirst.providers.scenario import RESPONDING_TYPES, Responsiveness, Scenario

AppStatus = Literal["rejected", "unnotified", "unread", "read"]


@dataclass(frozen=True)
class AppOutcome:
    """An NHS App message: delivered (or rejected), notified or not, read or not."""

    status: AppStatus
    delivered_after: float  # from the send
    read_after: float | None  # from delivery
    respond_after: float | None  # from reading

    @property
    def responded_at(self) -> float | None:
        """From the send, through the NHS App alone."""
        if self.read_after is None or self.respond_after is None:
            return None
        return self.delivered_after + self.read_after + self.respond_after

    @property
    def read_at(self) -> float | None:
        return None if self.read_after is None else self.delivered_after + self.read_after


@dataclass(frozen=True)
class TextOutcome:
    """An SMS or email: delivered or failed, and perhaps answered."""

    failed: bool
    delivered_after: float  # from the send
    respond_after: float | None  # from delivery

    @property
    def responded_at(self) -> float | None:
        if self.respond_after is None:
            return None
        return self.delivered_after + self.respond_after


def _lognormal(median: float, spread: float, gauss: float) -> float:
    return median * math.exp(spread * gauss)


def app_outcome(sc: Scenario, reference: str, message_type: str) -> AppOutcome:
    rng = sc.rng(reference)
    delivery, roll, reads, read_delay, responds, respond_delay = (
        rng.gauss(0, 1),
        rng.random(),
        rng.random(),
        rng.gauss(0, 1),
        rng.random(),
        rng.gauss(0, 1),
    )
    delivered = _lognormal(sc.delivery_seconds, sc.spread, delivery)
    if roll < sc.failed_share:
        return AppOutcome("rejected", delivered, None, None)
    if roll < sc.failed_share + sc.unnotified_share:
        return AppOutcome("unnotified", delivered, None, None)
    if reads >= sc.read_share:
        return AppOutcome("unread", delivered, None, None)
    read = _lognormal(sc.read_median_seconds, sc.spread, read_delay)
    behaviour = sc.responsiveness(message_type)
    respond = None
    if behaviour is not None and responds < behaviour.app_share:
        respond = _lognormal(behaviour.app_median_seconds, sc.spread, respond_delay)
    return AppOutcome("read", delivered, read, respond)


def text_outcome(
    sc: Scenario, reference: str, message_type: str, *, channel: str = "sms"
) -> TextOutcome:
    """A fallback SMS (reference ``<id>/fallback``) follows the fallback share: its patient
    has already been told in the NHS App and ignored it."""
    rng = sc.rng(reference)
    delivery, fails, responds, respond_delay = (
        rng.gauss(0, 1),
        rng.random(),
        rng.random(),
        rng.gauss(0, 1),
    )
    delivered = _lognormal(sc.delivery_seconds, sc.spread, delivery)
    if fails < sc.sms_failed_share:
        return TextOutcome(True, delivered, None)
    behaviour = sc.responsiveness(message_type)
    if behaviour is None or channel != "sms":
        return TextOutcome(False, delivered, None)
    share = behaviour.fallback_share if reference.endswith("/fallback") else behaviour.sms_share
    if responds >= share:
        return TextOutcome(False, delivered, None)
    return TextOutcome(
        False, delivered, _lognormal(behaviour.sms_median_seconds, sc.spread, respond_delay)
    )


def pilot_response(
    sc: Scenario, message_id: str, message_type: str, *, by_app: bool, deadline: float
) -> float | None:
    """When (from dispatch) the pilot sees this message answered, or None: the NHS App
    route with its fallback SMS at the deadline (or at once when the push cannot be
    delivered), or an SMS. The earlier of the two legs counts, as in the pipeline."""
    if not by_app:
        return text_outcome(sc, message_id, message_type).responded_at
    app = app_outcome(sc, message_id, message_type)
    answered = [app.responded_at]
    if app.status in ("rejected", "unnotified"):
        fallback_at: float | None = app.delivered_after
    elif app.read_at is None or app.read_at > deadline:
        fallback_at = deadline
    else:
        fallback_at = None
    if fallback_at is not None:
        text = text_outcome(sc, f"{message_id}/fallback", message_type)
        if text.responded_at is not None:
            answered.append(fallback_at + text.responded_at)
    times = [t for t in answered if t is not None]
    return min(times) if times else None


__all__ = [
    "RESPONDING_TYPES",
    "AppOutcome",
    "Responsiveness",
    "TextOutcome",
    "app_outcome",
    "pilot_response",
    "text_outcome",
]
