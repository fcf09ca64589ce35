"""The Grafana dashboard: loads, panels are distinct and titled, every query is on the
``prometheus`` datasource and names only metrics the workers expose."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from .metric_names import ROOT, unknown, used

DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "appfirst.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list(_panels(dashboard["panels"]))


@pytest.fixture(scope="module")
def queried(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in panels if p["type"] != "row"]


def test_it_is_a_current_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "appfirst"
    assert dashboard["schemaVersion"] >= 39


def test_panel_ids_are_unique(panels: list[dict[str, Any]]) -> None:
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids


def test_every_panel_has_a_title(panels: list[dict[str, Any]]) -> None:
    assert all(p.get("title", "").strip() for p in panels)


def test_every_query_is_on_the_prometheus_datasource(
    dashboard: dict[str, Any], queried: list[dict[str, Any]]
) -> None:
    for panel in queried:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == DATASOURCE, variable["name"]


def test_every_query_names_only_metrics_the_workers_expose(
    dashboard: dict[str, Any], queried: list[dict[str, Any]]
) -> None:
    exprs = [t["expr"] for p in queried for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    assert exprs
    for expr in exprs:
        assert not unknown(expr), f"{expr}: not exposed: {sorted(unknown(expr))}"


def test_rates_follow_the_scrape_interval(queried: list[dict[str, Any]]) -> None:
    # A fixed window shorter than four scrapes shows gaps; a longer one hides spikes.
    for panel in queried:
        for target in panel["targets"]:
            for window in re.findall(r"\b(?:rate|irate)\([^\[]*\[([^\]]+)\]", target["expr"]):
                assert window == "$__rate_interval", (panel["title"], target["expr"])


def test_the_panels_the_operators_asked_for_are_there(queried: list[dict[str, Any]]) -> None:
    wanted = {
        "appfirst_records_in_total",
        "appfirst_records_out_total",
        "appfirst_dispatches_total",
        "appfirst_fallbacks_total",
        "appfirst_pending_deadlines",
        "appfirst_fallback_lateness_seconds_bucket",
        "appfirst_provider_requests_total",
        "appfirst_provider_request_duration_seconds_bucket",
        "appfirst_consumer_lag",
        "appfirst_dead_letters_total",
        "appfirst_duplicate_requests_total",
        "appfirst_sends_absorbed_total",
    }
    shown = set().union(*(used(t["expr"]) for p in queried for t in p["targets"]))
    assert wanted <= shown, sorted(wanted - shown)
    assert any('up{job="appfirst"' in t["expr"] for p in queried for t in p["targets"])
