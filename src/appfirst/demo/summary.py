"""The demo's closing summary, tallied from what the pipeline wrote to Kafka."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table

from appfirst.providers.published_pilot import expected_response
from appfirst.providers.scenario import Scenario
from appfirst.rules.routing import Deadlines
from appfirst.topics.models import DeadLetter, Dispatch, Event, Fallback, PilotMetric


@dataclass
class Tally:
    dispatches: dict[str, Dispatch] = field(default_factory=dict)
    fallbacks: dict[str, Fallback] = field(default_factory=dict)
    fallback_records: int = 0
    metrics: dict[str, PilotMetric] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)
    refused_requests: int = 0  # send requests dead-lettered (not the extra malformed records)

    def add(self, topic: str, event: Event) -> None:
        if isinstance(event, Dispatch):
            self.dispatches.setdefault(event.message_id, event)
        elif isinstance(event, Fallback):
            self.fallback_records += 1
            self.fallbacks.setdefault(event.message_id, event)
        elif isinstance(event, PilotMetric):
            self.metrics[event.key] = event
        elif isinstance(event, DeadLetter):
            self.dead_letters[event.reason[:60]] += 1
            # The demo's extra malformed records (keys "bad-...") are not send requests.
            request = event.source_topic.endswith("send-requests")
            if request and not (event.key or "").startswith("bad-"):
                self.refused_requests += 1

    def decided(self) -> int:
        """Send requests the worker has decided: dispatched or refused."""
        return len(self.dispatches) + self.refused_requests

    def dispatch_count(self) -> int:
        return len(self.dispatches)

    def fallbacks_total(self) -> int:
        return len(self.fallbacks)

    def both_arms(self) -> bool:
        arms = {m.arm for m in self.metrics.values() if m.kind == "arm_rate" and m.sent}
        return {"treatment", "control"} <= arms

    def all_channels(self) -> bool:
        return {"nhs_app", "sms", "email"} <= {d.channel for d in self.dispatches.values()}

    def rate(self, arm: str, h: int) -> PilotMetric | None:
        m = self.metrics.get(f"arm_rate|{arm}|all|{h}")
        return m if m is not None and m.sent else None


@dataclass(frozen=True)
class Expectation:
    """What the scenario implies for one arm's published rate: the mean of each counted
    message's chance of an answer within the horizon, given its type, channel and
    fallback deadline (``providers/published_pilot.expected_response``)."""

    rate: float
    messages: int

    def tolerance(self) -> float:
        """Three standard errors of a rate over this many messages, and half a point for
        what the expectation leaves out (fallbacks with no usable mobile, a callback lost,
        the metrics' one-second buckets)."""
        p = min(max(self.rate, 0.01), 0.99)
        return 3 * math.sqrt(p * (1 - p) / max(self.messages, 1)) + 0.005

    def agrees(self, observed: float) -> bool:
        return abs(observed - self.rate) <= self.tolerance()


def expected_rate(
    tally: Tally,
    scenario: Scenario,
    deadlines: Deadlines,
    arm: str,
    h: int,
    time_scale: float,
) -> Expectation | None:
    """The scenario's expectation for ``arm_rate|arm|all|h`` as the worker last published
    it: over the messages it counted (sent by a practice of the arm, matured by then).
    Times in the demo's real seconds; the scenario's in simulated seconds."""
    m = tally.rate(arm, h)
    if m is None:
        return None
    published = m.updated_at.timestamp()
    counted = [
        d
        for d in tally.dispatches.values()
        if d.arm == arm and d.channel != "none" and d.dispatched_at.timestamp() + h < published
    ]
    if not counted:
        return None
    total = sum(
        expected_response(
            scenario,
            d.message_type,
            d.channel,
            h * time_scale,
            deadlines.for_message(d.origin, d.message_type) * time_scale,
        )
        for d in counted
    )
    return Expectation(total / len(counted), len(counted))


def render(
    tally: Tally,
    sends: dict[str, Any],
    horizons: tuple[int, ...],
    time_scale: float,
    expected: dict[tuple[str, int], Expectation | None] | None = None,
) -> Group:
    by_reason = Table(title="Messages by channel and reason", title_justify="left")
    by_reason.add_column("channel")
    by_reason.add_column("reason")
    by_reason.add_column("messages", justify="right")
    counts = Counter((d.channel, d.reason) for d in tally.dispatches.values())
    for (channel, reason), n in sorted(counts.items()):
        by_reason.add_row(channel, reason, str(n))
    by_reason.add_row("[bold]all[/]", "", f"[bold]{sum(counts.values())}[/]")

    fb = Table(title="Fallback SMS by reason", title_justify="left")
    fb.add_column("reason")
    fb.add_column("fallbacks", justify="right")
    for fb_reason, n in sorted(Counter(f.reason for f in tally.fallbacks.values()).items()):
        fb.add_row(fb_reason, str(n))
    fb.add_row("[bold]all[/]", f"[bold]{tally.fallbacks_total()}[/]")

    rates = Table(
        title="Response rate by arm (all message types, matured messages only)",
        title_justify="left",
    )
    rates.add_column("arm")
    for h in horizons:
        rates.add_column(f"within {h * time_scale / 3600:g} h (simulated)", justify="right")
    for arm in ("treatment", "control"):
        cells = []
        for h in horizons:
            m = tally.rate(arm, h)
            if m is None:
                cells.append("-")
                continue
            cell = f"{m.response_rate or 0:.1%} of {m.sent} ({m.fallbacks} fallbacks)"
            e = (expected or {}).get((arm, h))
            if e is not None:
                agrees = e.agrees(m.response_rate or 0)
                verdict = "as expected" if agrees else "[red]NOT as expected[/]"
                cell += f"\nscenario: {e.rate:.1%} ± {e.tolerance():.1%}, {verdict}"
            cells.append(cell)
        rates.add_row(arm, *cells)

    pilot = Table(
        title="Treatment minus control (practices as the unit; published: behind at 1 h, "
        "level at 3 h)",
        title_justify="left",
    )
    pilot.add_column("message type")
    for h in horizons:
        pilot.add_column(f"{h * time_scale / 3600:g} h: difference (95% CI)", justify="right")
    for message_type in COMPARED_TYPES:
        cells = [_comparison(tally.metrics.get(f"comparison|{message_type}|{h}")) for h in horizons]
        pilot.add_row(message_type, *cells)

    checks = Table(title="Delivery checks", title_justify="left", show_header=False)
    checks.add_column("check")
    checks.add_column("value", justify="right")
    checks.add_row("sends at the simulator", str(sends.get("total")))
    checks.add_row("  of which fallback SMS", str(sends.get("fallbacks")))
    no_mobile = sum(1 for f in tally.fallbacks.values() if f.mobile is None)
    checks.add_row("fallbacks due with no usable mobile (not sendable)", str(no_mobile))
    # The simulator, like the providers, delivers a repeated reference again: each one
    # counted here reached a patient twice.
    checks.add_row("repeated sends (a second message each)", str(sends.get("duplicates")))
    checks.add_row("fallback records (incl. re-emitted)", str(tally.fallback_records))
    checks.add_row("dead letters", str(sum(tally.dead_letters.values())))
    for why, n in tally.dead_letters.most_common(3):
        checks.add_row(f"  {why}", str(n))
    return Group(by_reason, fb, rates, pilot, checks)


COMPARED_TYPES = ("all", "self_book", "sms_with_response", "questionnaire")


def _comparison(m: PilotMetric | None) -> str:
    if m is None or m.difference is None or m.ci_low is None or m.ci_high is None:
        return "-" if m is None else (m.method or "-").replace("_", " ")
    relative = f", {m.difference / m.control_rate:+.0%} of control" if m.control_rate else ""
    return (
        f"{m.difference * 100:+.1f} pts ({m.ci_low * 100:+.1f} to {m.ci_high * 100:+.1f}){relative}"
    )
