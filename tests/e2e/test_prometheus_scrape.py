"""A real Prometheus scrapes a real worker: our series arrive under the names the alerts and
the dashboard use, the alert rules load and evaluate, every dashboard query runs, and no
label value holds what was sent about a patient."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from appfirst.broker import EmbeddedBroker
from appfirst.ports import free_port
from appfirst.processes import stop
from tests import loopback
from tests.integration.conftest import Stack
from tests.integration.factories import app_user, practice, request

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "appfirst.json"
PROMETHEUS = shutil.which("prometheus")
APP_USERS = 3
UNKNOWN = 2  # no eligibility record: routed to SMS
MOBILE = "07911 123456"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        PROMETHEUS is None, reason="prometheus not installed: apt-get install prometheus"
    ),
]


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stack's readiness probe uses httpx with the environment's proxy settings.
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def stack(broker: EmbeddedBroker, tmp_path: Path, _no_proxy: None) -> AsyncIterator[Stack]:
    (tmp_path / "stack").mkdir()
    running = Stack(broker, tmp_path / "stack")
    yield running
    await running.close()


@pytest.fixture
def prometheus(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """Prometheus scraping the stack's first worker (its port is chosen before it starts)
    every second, with our alert rules, on a port and storage of its own."""
    assert PROMETHEUS is not None
    # JSON is YAML, so the config needs no YAML library.
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "appfirst",
                "static_configs": [{"targets": [f"127.0.0.1:{stack.callback_port}"]}],
            }
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(json.dumps(config), encoding="utf-8")
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stop() signals its process group
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=url, timeout=1.0, trust_env=False) as client:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"prometheus exited:\n{log.read_text()[-3000:]}")
                try:
                    if client.get("/-/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"prometheus not ready:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield url
    finally:
        stop(proc)


async def _until(what: str, check: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    """The first truthy value ``check`` returns, polled every half second."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; last: {value!r}")
        await asyncio.sleep(0.5)


class Api:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def get(self, path: str, **params: str) -> Any:
        response = await self.client.get(path, params=params)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, promql: str) -> list[dict[str, Any]]:
        data = await self.get("/api/v1/query", query=promql)
        return list(data["result"])

    async def by(self, promql: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in await self.query(promql)}


async def test_prometheus_scrapes_the_worker_and_evaluates_our_rules(
    stack: Stack, prometheus: str
) -> None:
    await stack.start_worker()
    await stack.publish("practice-settings", "PROM1", practice("PROM1"))
    requests = [request(f"prom-app-{i}", ods_code="PROM1") for i in range(APP_USERS)]
    for req in requests:
        user = app_user(req.patient.nhs_number)
        await stack.publish("eligibility", user.nhs_number, user)
    requests += [request(f"prom-sms-{i}", ods_code="PROM1") for i in range(UNKNOWN)]
    for req in requests:
        await stack.publish("send-requests", req.message_id, req)
    # Undecodable: the first dead letter of this worker, a series that appears at 1.
    await stack.publish("send-requests", "prom-junk", b"\x07\x00garbage")
    await stack.read(["dispatches"], lambda rs: len(rs) >= len(requests))

    async with loopback.client(base_url=prometheus, timeout=5.0, trust_env=False) as client:
        api = Api(client)
        up = await _until("the worker scraped", lambda: api.query('up{job="appfirst"} == 1'))
        assert len(up) == 1

        expected = {"nhs_app": float(APP_USERS), "sms": float(UNKNOWN)}

        async def dispatched() -> dict[str, float]:
            got = await api.by("sum by (channel) (appfirst_dispatches_total)", "channel")
            return got if got == expected else {}

        await _until(f"dispatches {expected}", dispatched)
        records_in = await api.by(
            'sum by (topic) (appfirst_records_in_total{outcome="ok"})', "topic"
        )
        assert records_in.get("send-requests", 0) >= len(requests), records_in

        # Counted once the broker acknowledges the record, which a scrape can come before:
        # the decisions above are counted when they are made.
        async def acknowledged() -> dict[str, float]:
            out = await api.by('sum by (topic) (appfirst_records_out_total{outcome="ok"})', "topic")
            return out if out.get("dispatches", 0) >= len(requests) else {}

        await _until("every dispatch acknowledged", acknowledged)
        dead = await api.by("sum by (topic) (appfirst_dead_letters_total)", "topic")
        assert dead == {"send-requests": 1.0}
        # The bucket AppfirstFallbackLate reads, as Prometheus stores it.
        assert await api.query('appfirst_fallback_lateness_seconds_bucket{le="60.0"}')
        assert await api.query("appfirst_pending_deadlines")

        async def rules_evaluated() -> list[dict[str, Any]]:
            groups = (await api.get("/api/v1/rules"))["groups"]
            ours = [g for g in groups if g["name"] == "appfirst"]
            if not ours or any(r["health"] != "ok" for r in ours[0]["rules"]):
                return []
            return list(ours[0]["rules"])

        rules = await _until("the appfirst rules evaluated with health ok", rules_evaluated)
        assert {r["name"] for r in rules} >= {
            "AppfirstConsumerLagGrowing",
            "AppfirstFallbackLate",
            "AppfirstDeadLetters",
            "AppfirstProviderErrors",
            "AppfirstWorkerDown",
        }
        assert all(r["type"] == "alerting" for r in rules)

        # increase() cannot see a series that starts at 1; the rule's second clause does.
        async def dead_letter_alert() -> list[dict[str, Any]]:
            alerts = (await api.get("/api/v1/alerts"))["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "AppfirstDeadLetters"]

        alerts = await _until("AppfirstDeadLetters pending", dead_letter_alert)
        assert alerts[0]["labels"]["topic"] == "send-requests"
        assert alerts[0]["state"] in {"pending", "firing"}

        # Every dashboard query runs on a real Prometheus, and the routing panel has data
        # once rate() has two samples of the dispatch counters.
        await _until(
            "a second sample of the dispatch counters",
            lambda: api.query("count_over_time(appfirst_dispatches_total[15s]) >= 2"),
        )
        panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
        for panel in panels:
            for target in panel.get("targets", []):
                expr = (
                    target["expr"]
                    .replace("$__rate_interval", "15s")
                    .replace("$__range", "5m")
                    .replace("$instance", ".*")
                )
                result = await api.query(expr)
                if "appfirst_dispatches_total" in expr:
                    assert result, panel["title"]

        # Nothing we sent about a patient, nor a message id, is in any label value.
        series = await api.get("/api/v1/series", **{"match[]": '{__name__=~"appfirst_.*"}'})
        values = {v for labels in series for k, v in labels.items() if k != "__name__"}
        sent = {MOBILE, MOBILE.replace(" ", ""), "447911123456"}
        for req in requests:
            sent |= {req.patient.nhs_number, req.message_id, req.body}
        assert not {v for v in values if any(s in v for s in sent)}, values
