"""The demo's logs are JSON lines, and none of them holds what identifies a patient: no NHS
number, mobile number, email or message body that the demo's traffic carried."""

from __future__ import annotations

import json
from typing import Any

import pytest

from appfirst.codecs import Decoder
from appfirst.demo.traffic import Pilot
from appfirst.errors import DecodeError
from appfirst.rules.contact import normalise_uk_mobile
from appfirst.topics.models import SendRequest
from tests.e2e.demo_run import MESSAGES, SEED, DemoRun

pytestmark = pytest.mark.integration

LOGS = ("worker.log", "simulator.log")


def patient_data(seed: int, count: int) -> set[str]:
    """Every NHS number, mobile (as written, compact, E.164 with and without the +), email
    and body of the demo's traffic, regenerated from its seed."""
    pilot = Pilot.make(seed)
    found = {nhs for p in pilot.practices for nhs in pilot.scenario.roster(p.ods_code)}
    decoder = Decoder(SendRequest)
    for batch in pilot.messages(count):
        for record in batch:
            if record.topic == "eligibility":
                found.add(record.key)
                continue
            try:
                request = decoder.decode(record.value)
            except DecodeError:
                continue  # the deliberately malformed records
            patient = request.patient
            found |= {patient.nhs_number, request.body, patient.email or ""}
            if patient.mobile:
                e164 = normalise_uk_mobile(patient.mobile) or ""
                found |= {patient.mobile, patient.mobile.replace(" ", ""), e164, e164[1:]}
    found.discard("")
    return found


@pytest.mark.xdist_group("demo")
def test_demo_logs_are_json_lines_without_patient_data(demo_run: DemoRun) -> None:
    out = demo_run.out
    assert demo_run.workdir is not None, out
    workdir = demo_run.workdir
    assert demo_run.returncode == 0, out
    texts = {name: (workdir / name).read_text(encoding="utf-8") for name in LOGS}
    records: list[dict[str, Any]] = []
    for name, text in texts.items():
        for n, line in enumerate(text.splitlines(), start=1):
            try:
                record = json.loads(line)
            except ValueError:
                pytest.fail(f"{name}:{n} is not a JSON line: {line[:200]}")
            assert {"time", "level", "logger", "message"} <= set(record), line
            records.append(record)
    # The logs say something, and name messages by id (fallbacks are logged at info).
    assert len(records) > 50
    assert any(str(r.get("message_id", "")).startswith(f"demo-{SEED}-") for r in records)

    secrets = patient_data(SEED, MESSAGES)
    assert len(secrets) > 5000
    # JSON escapes non-ASCII: search the decoded values as well as the raw files.
    haystack = "\n".join(
        [*texts.values(), out, *(json.dumps(r, ensure_ascii=False) for r in records)]
    )
    leaks = sorted(s for s in secrets if s in haystack)
    assert leaks == []
