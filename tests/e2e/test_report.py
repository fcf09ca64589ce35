"""The pilot report: rendered from known data, then opened in headless Chromium, which must
show a page that is not blank and log no errors."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from matplotlib.image import imread

from appfirst.report import render, summarise
from appfirst.topics.models import Dispatch, PilotMetric

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _dispatch(i: int, arm: str) -> Dispatch:
    return Dispatch(
        message_id=f"m-{arm}-{i}",
        ods_code="T0001" if arm == "treatment" else "C0001",
        channel="nhs_app" if arm == "treatment" else "sms",
        reason="nhs_app_enabled" if arm == "treatment" else "integration_off",
        dispatched_at=T0,
        message_type="sms_with_response",
        origin="individual",
        arm=arm,  # type: ignore[arg-type]
        body="Please reply to your GP practice: https://example.org/r/1",
    )


def _metrics() -> dict[str, PilotMetric]:
    out: dict[str, PilotMetric] = {}
    for h, (t, c) in {3600: (0.12, 0.18), 10800: (0.25, 0.26)}.items():
        for arm, rate in (("treatment", t), ("control", c)):
            key = f"arm_rate|{arm}|all|{h}"
            out[key] = PilotMetric(
                kind="arm_rate",
                key=key,
                arm=arm,
                message_type="all",  # type: ignore[arg-type]
                horizon_seconds=h,
                sent=1000,
                responded=int(rate * 1000),
                response_rate=rate,
                read=500,
                fallbacks=200,
                updated_at=T0,
            )
        key = f"comparison|all|{h}"
        out[key] = PilotMetric(
            kind="comparison",
            key=key,
            message_type="all",
            horizon_seconds=h,
            treatment_rate=t,
            control_rate=c,
            difference=t - c,
            ci_low=t - c - 0.04,
            ci_high=t - c + 0.04,
            p_value=0.01,
            method="practice_level_welch_t",
            naive_ci_low=t - c - 0.01,
            naive_ci_high=t - c + 0.01,
            naive_p_value=0.0001,
            icc=0.03,
            design_effect=3.1,
            srm_p_value=0.8,
            treatment_practices=6,
            control_practices=6,
            treatment_sent=1000,
            control_sent=1000,
            updated_at=T0,
        )
    return out


def _page(tmp_path: Path) -> Path:
    dispatches = [_dispatch(i, arm) for arm in ("treatment", "control") for i in range(200)]
    reads = {
        d.message_id: (T0 + timedelta(minutes=5 + 3 * i)).timestamp()
        for i, d in enumerate(dispatches[:150])
    }
    responses = {
        d.message_id: (T0 + timedelta(minutes=20 + i)).timestamp()
        for i, d in enumerate(dispatches[::3])
    }
    data = summarise(
        _metrics(), dispatches, reads, responses, now=(T0 + timedelta(days=1)).timestamp()
    )
    page = tmp_path / "report.html"
    page.write_text(render(data, price_per_fragment=0.0227, deadline_seconds=3600), "utf-8")
    return page


def test_the_report_says_what_an_analyst_needs(tmp_path: Path) -> None:
    text = _page(tmp_path).read_text(encoding="utf-8")
    for words in (
        "Treatment against control",
        "mean over practices",
        "naive interval",
        "Time to respond",
        "Deadline tuning",
        "avoided about",
    ):
        assert words in text, words
    assert text.count("<svg") == 5
    assert "<script" not in text  # self-contained and inert: opens offline, mails as is


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
def test_the_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    page = _page(tmp_path)
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [
            str(CHROMIUM),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), run.stderr[-2000:]
    pixels = imread(shot)
    assert pixels.std() > 0.05, "the page rendered blank"
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console


def test_a_compressed_clock_is_reported_in_simulated_time() -> None:
    """The demo runs 120 times faster than life; its report reads in simulated hours."""
    dispatches = [_dispatch(i, arm) for i in range(20) for arm in ("treatment", "control")]
    reads = {d.message_id: (T0 + timedelta(seconds=30)).timestamp() for d in dispatches}
    now = (T0 + timedelta(minutes=5)).timestamp()
    plain = summarise(_metrics(), dispatches, reads, {}, now=now)
    scaled = summarise(_metrics(), dispatches, reads, {}, now=now, time_scale=120)
    assert plain.nhs_app_read is not None and scaled.nhs_app_read is not None
    assert plain.nhs_app_read.times == (30.0,)
    assert scaled.nhs_app_read.times == (3600.0,)  # read after an hour, as the demo means
    assert scaled.metrics["arm_rate|treatment|all|3600"].horizon_seconds == 3600 * 120
    assert _metrics()["arm_rate|treatment|all|3600"].horizon_seconds == 3600  # not mutated
