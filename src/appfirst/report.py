"""``appfirst report``: the pilot as one self-contained HTML page.

Rates and the comparison come from ``pilot-metrics`` (the latest record per key). Time to
read and time to respond need each message's timings, so they are read from the event
topics (``dispatches``, ``read-receipts``, ``responses``). Plots are inline SVG, so the
file opens anywhere, offline, and can be mailed as it is.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen: render to files only
import matplotlib.pyplot as plt

from appfirst.jobs.kafka import read_all
from appfirst.rules.contact import sms_fragments
from appfirst.rules.pilot import epoch
from appfirst.rules.survival import (
    Curve,
    TuningPoint,
    deadline_curve,
    kaplan_meier,
)
from appfirst.settings import Settings
from appfirst.topics.models import Dispatch, PilotMetric, ReadReceipt, Response

ARM_COLOURS = {"treatment": "#005eb8", "control": "#da291c"}  # NHS blue, emergency red


@dataclass
class PilotData:
    metrics: dict[str, PilotMetric]
    read_curves: dict[str, Curve] = field(default_factory=dict)
    response_curves: dict[str, Curve] = field(default_factory=dict)
    nhs_app_read: Curve | None = None
    nhs_app_messages: int = 0
    fragments_per_sms: float = 1.0
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


async def gather(settings: Settings, time_scale: float = 1.0) -> PilotData:
    """Everything the report needs, from the topics. ``time_scale`` > 1 (the demo's
    compressed clock) reports durations in simulated time."""
    metrics = {m.key: m for m in await read_all(settings, "pilot-metrics", PilotMetric, None)}
    dispatches = {
        d.message_id: d
        for d in await read_all(settings, "dispatches", Dispatch, None)
        if d.arm is not None and d.channel != "none"
    }
    reads: dict[str, float] = {}
    for r in await read_all(settings, "read-receipts", ReadReceipt, None):
        reads.setdefault(r.message_id, epoch(r.read_at))
    responses: dict[str, float] = {}
    for resp in await read_all(settings, "responses", Response, None):
        responses.setdefault(resp.message_id, epoch(resp.responded_at))
    return summarise(metrics, list(dispatches.values()), reads, responses, time_scale=time_scale)


def summarise(
    metrics: dict[str, PilotMetric],
    dispatches: list[Dispatch],
    reads: dict[str, float],
    responses: dict[str, float],
    now: float | None = None,
    time_scale: float = 1.0,
) -> PilotData:
    """Curves from message timings; a message without the event is censored at ``now``."""
    now = datetime.now(UTC).timestamp() if now is None else now
    if time_scale != 1.0:
        metrics = {
            key: m.model_copy(update={"horizon_seconds": round(m.horizon_seconds * time_scale)})
            if m.horizon_seconds is not None
            else m
            for key, m in metrics.items()
        }
        reads, responses, now, dispatches = _rescaled(reads, responses, now, dispatches, time_scale)
    data = PilotData(metrics)
    by_arm: dict[str, list[Dispatch]] = {}
    for d in dispatches:
        by_arm.setdefault(str(d.arm), []).append(d)
    for arm, rows in by_arm.items():
        response = kaplan_meier([_timing(d, responses, now) for d in rows])
        if response is not None:
            data.response_curves[arm] = response
        app_rows = [d for d in rows if d.channel == "nhs_app"]
        read = kaplan_meier([_timing(d, reads, now) for d in app_rows])
        if read is not None:
            data.read_curves[arm] = read
    app_first = [d for d in dispatches if d.channel == "nhs_app"]
    data.nhs_app_read = kaplan_meier([_timing(d, reads, now) for d in app_first])
    data.nhs_app_messages = len(app_first)
    bodies = [d.body for d in app_first if d.body]
    if bodies:
        data.fragments_per_sms = sum(sms_fragments(b) for b in bodies) / len(bodies)
    return data


def _rescaled(
    reads: dict[str, float],
    responses: dict[str, float],
    now: float,
    dispatches: list[Dispatch],
    scale: float,
) -> tuple[dict[str, float], dict[str, float], float, list[Dispatch]]:
    """Every time stretched about the first dispatch, so durations read as simulated."""
    if not dispatches:
        return reads, responses, now, dispatches
    origin = min(epoch(d.dispatched_at) for d in dispatches)

    def stretch(t: float) -> float:
        return origin + (t - origin) * scale

    moved = [
        d.model_copy(
            update={"dispatched_at": datetime.fromtimestamp(stretch(epoch(d.dispatched_at)), UTC)}
        )
        for d in dispatches
    ]
    return (
        {k: stretch(v) for k, v in reads.items()},
        {k: stretch(v) for k, v in responses.items()},
        stretch(now),
        moved,
    )


def _timing(d: Dispatch, events: dict[str, float], now: float) -> tuple[float, bool]:
    sent = epoch(d.dispatched_at)
    at = events.get(d.message_id)
    if at is None:
        return max(0.0, now - sent), False
    return max(0.0, at - sent), True


# --- rendering ------------------------------------------------------------------------------
def render(data: PilotData, *, price_per_fragment: float, deadline_seconds: float) -> str:
    comparisons = sorted(
        (m for m in data.metrics.values() if m.kind == "comparison"),
        key=lambda m: (m.message_type != "all", m.message_type or "", m.horizon_seconds or 0),
    )
    rates = [m for m in data.metrics.values() if m.kind == "arm_rate"]
    tuning = (
        deadline_curve(
            data.nhs_app_read,
            messages=data.nhs_app_messages,
            fragments_per_sms=data.fragments_per_sms,
            price_per_fragment=price_per_fragment,
        )
        if data.nhs_app_read
        else []
    )
    sections = [
        _section("Treatment against control", _comparison_table(comparisons)),
        _section("Response rate by horizon", _svg(_plot_rates(rates, comparisons))),
        _section("Time to respond", _svg(_plot_curves(data.response_curves, "respond"))),
        _section("Time to read (NHS App messages)", _svg(_plot_curves(data.read_curves, "read"))),
        _section("Fallback rate", _svg(_plot_fallbacks(rates))),
        _section(
            "Deadline tuning",
            _svg(_plot_tuning(tuning, deadline_seconds))
            + _tuning_table(tuning, data, deadline_seconds, price_per_fragment),
        ),
    ]
    stamp = data.generated_at.strftime("%Y-%m-%d %H:%M UTC")
    return PAGE.format(stamp=stamp, body="\n".join(sections))


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _hours(seconds: float | int | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"


def _pct(value: float | None) -> str:
    return "&ndash;" if value is None else f"{100 * value:.1f}%"


def _comparison_table(comparisons: list[PilotMetric]) -> str:
    if not comparisons:
        return "<p>No comparison yet: each arm needs two practices with matured messages.</p>"
    head = (
        "<tr><th>message type</th><th>horizon</th><th>treatment</th><th>control</th>"
        "<th>difference (95% CI)</th><th>p</th><th>naive CI (not for decisions)</th>"
        "<th>practices T/C</th><th>ICC</th><th>design effect</th><th>SRM p</th></tr>"
    )
    rows = []
    for c in comparisons:
        if c.difference is None:
            rows.append(
                f"<tr><td>{html.escape(c.message_type or '')}</td>"
                f"<td>{_hours(c.horizon_seconds)}</td><td colspan=9>too few practices</td></tr>"
            )
            continue
        rows.append(
            "<tr>"
            f"<td>{html.escape(c.message_type or '')}</td><td>{_hours(c.horizon_seconds)}</td>"
            f"<td>{_pct(c.treatment_rate)}</td><td>{_pct(c.control_rate)}</td>"
            f"<td><b>{_pct(c.difference)}</b> ({_pct(c.ci_low)} to {_pct(c.ci_high)})</td>"
            f"<td>{_num(c.p_value)}</td>"
            f"<td>{_pct(c.naive_ci_low)} to {_pct(c.naive_ci_high)}</td>"
            f"<td>{c.treatment_practices}/{c.control_practices}</td>"
            f"<td>{_num(c.icc)}</td><td>{_num(c.design_effect)}</td>"
            f"<td>{_num(c.srm_p_value)}</td></tr>"
        )
    note = (
        "<p class=note>Rates are the mean over practices (practices were randomised, so each "
        "counts once); the interval is a Welch t interval over practices. The naive interval "
        "treats messages as independent and is shown only to make the clustering visible.</p>"
    )
    return f"<table>{head}{''.join(rows)}</table>{note}"


def _num(value: float | None) -> str:
    return "&ndash;" if value is None else f"{value:.3g}"


def _plot_rates(rates: list[PilotMetric], comparisons: list[PilotMetric]) -> Any:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    by_arm: dict[str, list[tuple[int, float]]] = {}
    for m in rates:
        if m.message_type == "all" and m.response_rate is not None and m.sent:
            by_arm.setdefault(str(m.arm), []).append((m.horizon_seconds or 0, m.response_rate))
    for arm, points in sorted(by_arm.items()):
        points.sort()
        xs = [p[0] / 3600 for p in points]
        ax.plot(xs, [p[1] for p in points], "o-", color=ARM_COLOURS.get(arm), label=arm)
    for c in comparisons:
        if c.message_type != "all" or c.control_rate is None:
            continue
        if c.ci_low is None or c.ci_high is None:
            continue
        x = (c.horizon_seconds or 0) / 3600
        low, high = c.control_rate + c.ci_low, c.control_rate + c.ci_high
        ax.vlines(x, low, high, color=ARM_COLOURS["treatment"], alpha=0.35, linewidth=6)
    _hour_axis(ax, sorted({m.horizon_seconds or 0 for m in rates}))
    ax.set_xlabel("horizon")
    ax.set_ylabel("responded")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title("All message types; bars: control + 95% CI of the difference")
    ax.legend()
    return fig


def _hour_axis(ax: Any, seconds: list[int]) -> None:
    """A log time axis labelled in minutes and hours, at the values that matter."""
    ax.set_xscale("log")
    ticks = [s / 3600 for s in seconds if s > 0]
    ax.set_xticks(ticks, [_hours(s) for s in seconds if s > 0])
    ax.minorticks_off()


def _plot_curves(curves: dict[str, Curve], what: str) -> Any:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for arm, curve in sorted(curves.items()):
        hours = [0.0, *(t / 3600 for t in curve.times)]
        done = [0.0, *(1 - s for s in curve.survival)]
        ax.step(hours, done, where="post", color=ARM_COLOURS.get(arm), label=arm)
        ax.fill_between(
            [t / 3600 for t in curve.times],
            [1 - h for h in curve.high],
            [1 - lo for lo in curve.low],
            step="post",
            color=ARM_COLOURS.get(arm),
            alpha=0.15,
        )
    ax.set_xlabel("hours since sent")
    ax.set_ylabel(f"share who {what}")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title("Kaplan-Meier, with 95% band; unfinished messages censored")
    if curves:
        ax.legend()
    return fig


def _plot_fallbacks(rates: list[PilotMetric]) -> Any:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    by_arm: dict[str, list[tuple[int, float]]] = {}
    for m in rates:
        if m.message_type == "all" and m.sent:
            share = (m.fallbacks or 0) / m.sent
            by_arm.setdefault(str(m.arm), []).append((m.horizon_seconds or 0, share))
    for arm, points in sorted(by_arm.items()):
        points.sort()
        ax.plot(
            [p[0] / 3600 for p in points],
            [p[1] for p in points],
            "s-",
            color=ARM_COLOURS.get(arm),
            label=arm,
        )
    _hour_axis(ax, sorted({m.horizon_seconds or 0 for m in rates}))
    ax.set_xlabel("horizon")
    ax.set_ylabel("fallback SMS per message sent")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    if by_arm:
        ax.legend()
    return fig


def _plot_tuning(points: list[TuningPoint], deadline: float) -> Any:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if points:
        ax.plot(
            [p.deadline_seconds / 3600 for p in points],
            [p.fallback_share for p in points],
            "o-",
            color=ARM_COLOURS["treatment"],
        )
        ax.axvline(deadline / 3600, color="#425563", linestyle="--", label="current deadline")
        ax.legend()
    _hour_axis(ax, [p.deadline_seconds for p in points])
    ax.set_xlabel("fallback deadline")
    ax.set_ylabel("NHS App messages needing SMS")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    return fig


def _tuning_table(points: list[TuningPoint], data: PilotData, deadline: float, price: float) -> str:
    if not points:
        return "<p>No NHS App message has been read yet.</p>"
    rows = "".join(
        f"<tr><td>{_hours(p.deadline_seconds)}</td><td>{_pct(p.fallback_share)}</td>"
        f"<td>{p.fallback_sms:,.0f}</td><td>{p.fragments:,.0f}</td><td>£{p.cost:,.2f}</td></tr>"
        for p in points
    )
    read = data.nhs_app_read
    share_now = read.at(deadline) if read else 1.0
    avoided_sms = (1 - share_now) * data.nhs_app_messages
    avoided_fragments = avoided_sms * data.fragments_per_sms
    return (
        "<table><tr><th>deadline</th><th>needing SMS</th><th>fallback SMS</th>"
        f"<th>fragments</th><th>cost</th></tr>{rows}</table>"
        f"<p>At the current deadline ({_hours(deadline)}), {data.nhs_app_messages:,} NHS App "
        f"messages avoided about {avoided_sms:,.0f} SMS: {avoided_fragments:,.0f} fragments "
        f"(mean {data.fragments_per_sms:.2f} per message), about "
        f"£{avoided_fragments * price:,.2f} at £{price:g} a fragment.</p>"
    )


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>appfirst pilot report</title>
<style>
body {{ font-family: Arial, sans-serif; max-width: 60rem; margin: 2rem auto; color: #212b32; }}
h1 {{ color: #005eb8; }} h2 {{ border-bottom: 2px solid #d8dde0; padding-bottom: .3rem; }}
table {{ border-collapse: collapse; font-size: .9rem; }}
th, td {{ border: 1px solid #d8dde0; padding: .3rem .5rem; text-align: right; }}
th {{ background: #f0f4f5; }} td:first-child {{ text-align: left; }}
.note {{ color: #4c6272; font-size: .85rem; }} svg {{ max-width: 100%; height: auto; }}
</style></head>
<body>
<h1>NHS App first: pilot report</h1>
<p class=note>Generated {stamp}. Treatment: practices sending NHS App first with SMS
fallback. Control: SMS only. A message counts for a horizon once that horizon has passed.</p>
{body}
</body></html>
"""
