"""The worker's operations endpoints on a running worker: /metrics as Prometheus reads it
(with no patient or message identifier in any label), and /readyz when the broker goes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from appfirst.broker import EmbeddedBroker
from appfirst.redact import redact
from appfirst.rules.contact import normalise_uk_mobile
from tests import loopback

from .conftest import Stack
from .factories import app_user, practice, request

pytestmark = pytest.mark.integration

FAMILIES = {
    "appfirst_records_in": "counter",
    "appfirst_records_out": "counter",
    "appfirst_dispatches": "counter",
    "appfirst_fallbacks": "counter",
    "appfirst_pending_deadlines": "gauge",
    "appfirst_fallback_lateness_seconds": "histogram",
    "appfirst_provider_requests": "counter",
    "appfirst_provider_request_duration_seconds": "histogram",
    "appfirst_dead_letters": "counter",
    "appfirst_consumer_lag": "gauge",
}
MESSAGES = 20


def _samples(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families: dict[str, Any], sample: str, **labels: str) -> float:
    name = sample.removesuffix("_total").removesuffix("_count")
    family = families.get(name)
    if family is None:
        return 0.0
    return sum(
        s.value
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


PRODUCED = {
    "router-by-patient",
    "dispatches",
    "fallbacks",
    "metric-facts",
    "practice-stats",
    "pilot-metrics",
    "dead-letter",
}


def _topics(families: dict[str, Any], name: str) -> set[str]:
    family = families.get(name)
    if family is None:
        return set()
    return {
        s.labels["topic"]
        for s in family.samples
        if s.name.endswith("_total") and s.labels["outcome"] == "ok" and s.value > 0
    }


def _complete(families: dict[str, Any]) -> bool:
    lag = families.get("appfirst_consumer_lag")
    lag_topics = {s.labels["topic"] for s in lag.samples} if lag else set()
    return (
        _topics(families, "appfirst_records_out") >= PRODUCED
        # Nothing of ours reads pilot-metrics or dead-letter: they are for people.
        and PRODUCED - {"pilot-metrics", "dead-letter"} <= _topics(families, "appfirst_records_in")
        and _value(families, "appfirst_records_out_total", topic="dispatches", outcome="ok")
        >= MESSAGES
        and _value(families, "appfirst_records_out_total", topic="fallbacks", outcome="ok")
        >= MESSAGES / 2
        and _value(families, "appfirst_provider_requests_total", provider="notify", outcome="ok")
        >= MESSAGES / 2
        and _value(families, "appfirst_dead_letters_total", topic="send-requests") >= 1
        and {"send-requests", "dispatches", "fallbacks"} <= lag_topics
    )


async def test_metrics_cover_the_pipeline_and_no_label_names_a_patient(
    stack_factory: Any,
) -> None:
    stack = stack_factory(
        APPFIRST_PROVIDERS="simulator",
        APPFIRST_FALLBACK_INDIVIDUAL_SECONDS="1",
        APPFIRST_CONSUMER_LAG_SECONDS="0.5",
    )
    await stack.start_simulator(send_callbacks=False)  # no read receipts: NHS App falls back
    # Before the worker starts: a request routed before its practice's settings reach the
    # worker's cache is routed with the defaults (SMS, integration off).
    await stack.publish("practice-settings", "MET01", practice("MET01"))
    _, port = await stack.start_worker()
    reqs = [
        request(
            f"met-{i:03d}",
            ods_code="MET01",
            patient={"mobile": f"07911 1234{i:02d}", "email": f"patient{i}@example.org"},
        )
        for i in range(MESSAGES)
    ]
    records: list[tuple[str, str, Any]] = [
        ("eligibility", r.patient.nhs_number, app_user(r.patient.nhs_number)) for r in reqs[::2]
    ]
    records += [("send-requests", r.message_id, r) for r in reqs]
    await stack.publish_many(records)
    await stack.publish("send-requests", "bad-1", b"\x07not an event")

    url = f"http://127.0.0.1:{port}/metrics"
    deadline = asyncio.get_running_loop().time() + 90
    async with loopback.client(timeout=5) as client:
        while True:
            answer = await client.get(url)
            assert answer.status_code == 200
            families = _samples(answer.text)
            if _complete(families) or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)
    assert answer.headers["content-type"].startswith("text/plain; version=")
    assert _complete(families), answer.text
    for name, kind in FAMILIES.items():
        assert families[name].type == kind, name
    assert _value(families, "appfirst_dispatches_total", channel="nhs_app") >= MESSAGES / 2
    assert _value(families, "appfirst_fallbacks_total") >= MESSAGES / 2
    assert _value(families, "appfirst_fallback_lateness_seconds_count") >= MESSAGES / 2
    assert _value(families, "appfirst_provider_requests_total", provider="nhs_app") >= 1
    assert _value(families, "appfirst_provider_request_duration_seconds_count") >= 1
    assert _value(families, "appfirst_records_in_total", outcome="dead_letter") >= 1
    assert _value(families, "appfirst_records_out_total", outcome="error") == 0
    assert "appfirst_pending_deadlines" in {
        s.name for s in families["appfirst_pending_deadlines"].samples
    }
    lag = families["appfirst_consumer_lag"].samples
    # The only worker owns every partition of what it reads, and has caught up.
    assert {s.labels["partition"] for s in lag if s.labels["topic"] == "send-requests"} == {
        "0",
        "1",
        "2",
        "3",
    }
    assert all(s.value >= 0 for s in lag)

    identifiers = {r.message_id for r in reqs} | {"bad-1"}
    for r in reqs:
        mobile = r.patient.mobile or ""
        identifiers |= {r.patient.nhs_number, mobile, mobile.replace(" ", "")}
        identifiers |= {normalise_uk_mobile(mobile) or "", r.patient.email or "", r.body}
    identifiers.discard("")
    values = {v for f in families.values() for s in f.samples for v in s.labels.values()}
    assert values, "no labelled samples"
    assert not values & identifiers
    assert not [v for v in values if any(i in v for i in identifiers)]
    assert [v for v in values if redact(v) != v] == []  # nothing that looks like one either

    # SIGUSR1: where each task waits, by function and line, and no patient data with it.
    dumps = await stack.task_dumps()
    assert any("route_requests (streams/router.py:" in line for line in dumps), dumps
    assert any("dispatch" in line for line in dumps), dumps
    assert stack.workers[0][0].poll() is None, "the dump must not stop the worker"
    log_text = stack.logs()
    assert "LOCAL VARIABLES" not in log_text  # Faust's own SIGUSR1 dump is replaced
    assert not [i for i in identifiers if i.isdigit() and i in log_text]


async def test_readyz_turns_503_when_the_broker_goes(tmp_path: Path) -> None:
    own = EmbeddedBroker().start()  # its own broker: this test stops it
    stack = Stack(own, tmp_path, APPFIRST_BROKER_CHECK_SECONDS="1")
    try:
        _, port = await stack.start_worker()
        url = f"http://127.0.0.1:{port}"
        async with loopback.client(timeout=5) as client:
            assert (await client.get(url + "/readyz")).status_code == 200
            own.stop()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while loop.time() < deadline:
                answer = await client.get(url + "/readyz")
                if answer.json()["status"] == "broker unreachable":
                    break
                await asyncio.sleep(0.2)
            assert answer.status_code == 503, answer.text
            assert answer.json()["status"] == "broker unreachable"
            # Liveness is the process, not its broker: a restart would not bring Kafka back.
            assert (await client.get(url + "/healthz")).status_code == 200
    finally:
        if stack.workers:
            stack.kill_worker(0)  # with no broker a clean shutdown waits on it
        await stack.close()
        own.stop()
