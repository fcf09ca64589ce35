"""The demo's logs are JSON lines, and none of them holds what identifies a patient: no NHS
number, mobile number, email or message body that the demo's traffic carried."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appfirst.codecs import Decoder
from appfirst.demo.traffic import Pilot
from appfirst.errors import DecodeError
from appfirst.rules.contact import normalise_uk_mobile
from appfirst.topics.models import SendRequest

pytestmark = pytest.mark.integration

SEED = 2025  # the demo's default
MESSAGES = 400
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


def test_demo_logs_are_json_lines_without_patient_data(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "120", "TERM": "dumb", "APPFIRST_LOG_LEVEL": "info"}
    args = ["--messages", str(MESSAGES), "--seconds", "8", "--drain", "45", "--seed", str(SEED)]
    proc = subprocess.run(
        [sys.executable, "-m", "appfirst", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=240,
        check=False,
    )
    out = proc.stdout
    where = re.search(r"logs in (\S+)", out)
    assert where, out
    workdir = Path(where.group(1))
    try:
        assert proc.returncode == 0, out
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
        haystacks = [*texts.values(), out]
        haystacks += [json.dumps(r, ensure_ascii=False) for r in records]
        leaks = sorted(s for s in secrets if any(s in h for h in haystacks))
        assert leaks == []
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
