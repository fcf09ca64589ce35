"""The alert rules: valid for Prometheus, their unit tests pass, and they only name metrics
the workers expose."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from appfirst import telemetry

from .metric_names import ROOT, exposed, unknown, used

RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
# The rules' unit tests: those over days in a file of their own, evaluated every 5 minutes
# rather than every minute (17 s of promtool's time otherwise).
RULE_TESTS = [ROOT / "ops" / "prometheus" / f for f in ("alerts_test.yml", "alerts_test_days.yml")]
PROMTOOL = shutil.which("promtool")
REQUIRED_ALERTS = {
    "AppfirstConsumerLagGrowing",
    "AppfirstConsumerStalled",
    "AppfirstFallbackLate",
    "AppfirstDeadLetters",
    "AppfirstProviderErrors",
    "AppfirstWorkerDown",
}
# Patient identifiers must never reach a label, and alert labels end up in notifications.
PII_LABELS = {"nhs_number", "mobile", "phone", "email", "message_id", "reference", "body"}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if PROMTOOL is None:
        pytest.skip("promtool not installed: apt-get install prometheus")
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )


def _rule_tests() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in RULE_TESTS)


def _comments_removed(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def test_promtool_accepts_the_rules() -> None:
    done = _promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_unit_tests_pass() -> None:
    done = _promtool("test", "rules", *map(str, RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_name_only_metrics_the_workers_expose() -> None:
    text = _comments_removed(RULES.read_text(encoding="utf-8"))
    assert used(text), "no appfirst_ metric found in the rules"
    assert not unknown(text), f"not exposed: {sorted(unknown(text))}"


def test_the_rule_tests_feed_series_the_workers_expose() -> None:
    # Otherwise a typo repeated in a rule and in its test would pass promtool.
    text = _comments_removed(_rule_tests())
    assert not unknown(text), f"not exposed: {sorted(unknown(text))}"


def test_every_alert_is_unit_tested() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)", RULES.read_text(encoding="utf-8"), re.M))
    tested = set(re.findall(r"alertname: (\w+)", _rule_tests()))
    assert alerts >= REQUIRED_ALERTS
    assert alerts <= tested, f"no test for {sorted(alerts - tested)}"


def test_every_alert_waits_is_graded_and_tells_the_operator_where_to_look() -> None:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    assert [g["name"] for g in groups] == ["appfirst"]
    for rule in groups[0]["rules"]:
        name = rule["alert"]
        assert rule.get("for"), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name
        assert not PII_LABELS & set(rule["labels"]), name
        assert not PII_LABELS & set(re.findall(r"\$labels\.(\w+)", str(rule["annotations"])))


def test_the_name_check_knows_every_family_type() -> None:
    names = exposed()
    assert "appfirst_records_in_total" in names  # labelled counter, no samples yet
    assert "appfirst_records_in" not in names  # Prometheus only stores it with _total
    assert "appfirst_provider_request_duration_seconds_bucket" in names  # labelled histogram
    assert "appfirst_fallback_lateness_seconds_count" in names
    assert "appfirst_consumer_lag" in names
    assert unknown("sum(rate(appfirst_record_in_total[5m]))") == {"appfirst_record_in_total"}


def test_the_lateness_buckets_the_rules_read_exist() -> None:
    # A bucket that does not exist is no series, and the alert is silently never true.
    text = _comments_removed(RULES.read_text(encoding="utf-8"))
    wanted = set(re.findall(r'appfirst_fallback_lateness_seconds_bucket\{le="([^"]+)"\}', text))
    assert wanted == {"60.0"}
    exposed_bounds = {
        sample.labels["le"]
        for family in telemetry.registry.collect()
        for sample in family.samples
        if sample.name == "appfirst_fallback_lateness_seconds_bucket"
    }
    assert wanted <= exposed_bounds, sorted(exposed_bounds)
