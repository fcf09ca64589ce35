"""A synthetic pilot that reproduces the published findings (seeds/000): at 60 minutes
treatment practices' response rates were lower by 48% (self-book), 31% (message with
reply) and 23% (questionnaire); equal at 3 hours; control 5% higher at 7 days.

Nothing here names an arm. The effect comes from how patients treat the two routes: NHS App
messages are read later than texts; a message left unread gets its fallback SMS at the
deadline, which some answer; and a few who read in the app never answer. Only the
treatment's NHS App users take that route, so the arms differ as the pilot saw.

``calibrate()`` chose the shares and medians in ``RESPONSES`` from the expected response
curves (numerical integration, no sampling); ``python -m appfirst.providers.published_pilot``
runs it again. ``simulate_practices`` draws a pilot through the same pure patient model the
simulator uses (``providers/patients.py``), so a test can check that the analysis recovers
the published effects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

import numpy as np
from scipy import optimize
from scipy.stats import norm

from appfirst.providers.patients import pilot_response
from appfirst.providers.scenario import Responsiveness, Scenario
from appfirst.rules.stats import Practice

HOUR = 3600
DEADLINE = HOUR  # the individual fallback deadline of the pilot
HORIZONS = (HOUR, 3 * HOUR, 7 * 24 * HOUR)
TYPES = ("self_book", "sms_with_response", "questionnaire")
# (message type, horizon) -> treatment rate / control rate - 1, as published. "Control 5%
# higher at 7 days" is read as treatment 5% below control, the same way as the 60 minutes.
PUBLISHED_EFFECTS: dict[tuple[str, int], float] = {
    **{(t, HOUR): e for t, e in zip(TYPES, (-0.48, -0.31, -0.23), strict=True)},
    **{(t, 3 * HOUR): 0.0 for t in TYPES},
    **{(t, 7 * 24 * HOUR): -0.05 for t in TYPES},
}
# Share of patients who answer a text, chosen (not fitted): the control arm's 7-day rates.
TEXT: dict[str, float] = {"self_book": 0.55, "sms_with_response": 0.50, "questionnaire": 0.45}
SCENARIO = {
    "app_share": 0.85,
    "notifications_share": 0.95,
    "read_share": 0.8,
    "unnotified_share": 0.05,
    "failed_share": 0.02,
    "sms_failed_share": 0.03,
    "delivery_seconds": 3.0,
    "spread": 1.0,
}
# Fitted by calibrate(): the shared median time to read, then per type how NHS App readers
# and fallback SMS recipients answer.
READ_MEDIAN_SECONDS = 5781.0
RESPONSES: dict[str, Responsiveness] = {
    "self_book": Responsiveness(
        sms_share=0.55,
        sms_median_seconds=20561,
        app_share=0.3815,
        app_median_seconds=6358,
        fallback_share=0.3917,
    ),
    "sms_with_response": Responsiveness(
        sms_share=0.50,
        sms_median_seconds=9544,
        app_share=0.3931,
        app_median_seconds=1268,
        fallback_share=0.2970,
    ),
    "questionnaire": Responsiveness(
        sms_share=0.45,
        sms_median_seconds=8350,
        app_share=0.3971,
        app_median_seconds=790,
        fallback_share=0.2092,
    ),
}


# Types the pilot did not report take an answer as a message with reply does.
UNREPORTED = ("video_invite", "bp_monitoring_questionnaire")


def published_scenario(**overrides: object) -> Scenario:
    """The simulator's scenario for the published pilot (the demo's, with its time scale)."""
    responses = RESPONSES | {t: RESPONSES["sms_with_response"] for t in UNREPORTED}
    fields: dict[str, object] = {
        **SCENARIO,
        "read_median_seconds": READ_MEDIAN_SECONDS,
        "responses": {t: r.model_dump() for t, r in responses.items()},
    }
    return Scenario.model_validate(fields | overrides)


def app_route_share(sc: Scenario) -> float:
    """Share of a treatment practice's messages that go by the NHS App in this model."""
    return sc.app_share * sc.notifications_share


# --- expected curves ------------------------------------------------------------------------
_QUANTILES = norm.ppf((np.arange(4000) + 0.5) / 4000)


def _cdf(t: float | np.ndarray, median: float, spread: float) -> np.ndarray:
    t = np.maximum(np.asarray(t, dtype=float), 1e-9)
    return np.asarray(norm.cdf((np.log(t) - math.log(median)) / spread))


def expected_text(sc: Scenario, message_type: str, h: float) -> float:
    r = sc.responsiveness(message_type)
    assert r is not None
    return float((1 - sc.sms_failed_share) * r.sms_share * _cdf(h, r.sms_median_seconds, sc.spread))


def expected_app(sc: Scenario, message_type: str, h: float, deadline: float = DEADLINE) -> float:
    """P(answered by h) for an NHS App message with its fallback (delivery taken as 0)."""
    r = sc.responsiveness(message_type)
    assert r is not None
    fallback = (1 - sc.sms_failed_share) * r.fallback_share
    immediate = sc.failed_share + sc.unnotified_share
    notified = 1 - immediate
    reads = sc.read_median_seconds * np.exp(sc.spread * _QUANTILES)
    by_app = r.app_share * _cdf(h - reads, r.app_median_seconds, sc.spread)
    by_fallback = fallback * float(_cdf(h - deadline, r.sms_median_seconds, sc.spread))
    either = np.where(reads <= deadline, by_app, 1 - (1 - by_app) * (1 - by_fallback))
    return float(
        immediate * fallback * _cdf(h, r.sms_median_seconds, sc.spread)
        + notified * sc.read_share * either.mean()
        + notified * (1 - sc.read_share) * by_fallback
    )


def expected_response(
    sc: Scenario, message_type: str, channel: str, h: float, deadline: float = DEADLINE
) -> float:
    """P(answered by h) for one message sent by ``channel``, its clock starting when the
    patient could first see it (as the pipeline counts): 0 for a type that takes no answer
    and for email (the simulator's patients answer texts and the NHS App); an NHS App
    message with its fallback SMS at ``deadline``."""
    if sc.responsiveness(message_type) is None or channel not in ("nhs_app", "sms"):
        return 0.0
    if channel == "nhs_app":
        return expected_app(sc, message_type, h, deadline)
    return expected_text(sc, message_type, h)


def expected_effect(sc: Scenario, message_type: str, h: float) -> float:
    """Treatment rate / control rate - 1 at horizon h."""
    g = app_route_share(sc)
    control = expected_text(sc, message_type, h)
    treatment = (1 - g) * control + g * expected_app(sc, message_type, h)
    return treatment / control - 1


def calibrate() -> tuple[float, dict[str, Responsiveness]]:
    """Fit the read median and each type's (app share, app median, fallback share) to the
    published effects."""

    def unpack(x: np.ndarray) -> tuple[float, dict[str, Responsiveness]]:
        responses = {}
        for i, t in enumerate(TYPES):
            app_share, log_median, fallback_share, log_text_median = x[1 + 4 * i : 5 + 4 * i]
            responses[t] = Responsiveness(
                sms_share=TEXT[t],
                sms_median_seconds=math.exp(log_text_median),
                app_share=float(app_share),
                app_median_seconds=math.exp(log_median),
                fallback_share=float(fallback_share),
            )
        return math.exp(x[0]), responses

    def residuals(x: np.ndarray) -> list[float]:
        read_median, responses = unpack(x)
        sc = Scenario.model_validate(
            SCENARIO | {"read_median_seconds": read_median, "responses": responses}
        )
        return [expected_effect(sc, t, h) - effect for (t, h), effect in PUBLISHED_EFFECTS.items()]

    start = [math.log(2 * HOUR)] + [0.7, math.log(1800), 0.5, math.log(HOUR)] * len(TYPES)
    low = [math.log(60)] + [0.0, math.log(60), 0.0, math.log(60)] * len(TYPES)
    high = [math.log(48 * HOUR)] + [1.0, math.log(48 * HOUR), 1.0, math.log(48 * HOUR)] * len(TYPES)
    fit = optimize.least_squares(residuals, start, bounds=(low, high), xtol=1e-12)
    read_median, responses = unpack(fit.x)
    return round(read_median), responses


# --- a sampled pilot -------------------------------------------------------------------------
def simulate_practices(
    sc: Scenario,
    message_type: str,
    *,
    practices_per_arm: int,
    messages_per_practice: int,
    horizons: Iterable[int] = HORIZONS,
    seed: int = 0,
) -> dict[int, list[Practice]]:
    """Each practice's sent and answered counts per horizon, patient by patient: its
    registered patients get the messages; in treatment practices those with the NHS App
    and notifications on get them by the NHS App (with the fallback), everyone else by SMS.
    """
    horizons = tuple(horizons)
    rows: dict[int, list[Practice]] = {h: [] for h in horizons}
    for arm in ("treatment", "control"):
        for p in range(practices_per_arm):
            ods = f"{arm[0].upper()}{seed:03d}{p:04d}"
            roster = sc.roster(ods)
            answered = []
            for m in range(messages_per_practice):
                nhs = roster[m % len(roster)]
                by_app = arm == "treatment" and sc.app_user(nhs) is True
                message_id = f"{ods}-{message_type}-{m}"
                answered.append(
                    pilot_response(sc, message_id, message_type, by_app=by_app, deadline=DEADLINE)
                )
            for h in horizons:
                responded = sum(1 for t in answered if t is not None and t <= h)
                rows[h].append(Practice(arm, messages_per_practice, responded))
    return rows


if __name__ == "__main__":
    median, fitted = calibrate()
    print(f"READ_MEDIAN_SECONDS = {median}")
    print(json.dumps({t: r.model_dump() for t, r in fitted.items()}, indent=4))
    check = published_scenario(read_median_seconds=median, responses=fitted)
    for (t, h), effect in PUBLISHED_EFFECTS.items():
        print(f"{t:18} {h:>7}s published {effect:+.3f} model {expected_effect(check, t, h):+.3f}")
