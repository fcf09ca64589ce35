"""The demo's batch: a practice uploads a CSV patient list through ``POST /batches``, sees
who cannot be contacted, and watches the batch go Scheduled, Sending, Done."""

from __future__ import annotations

import asyncio
import csv
import io
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from appfirst.demo.traffic import Pilot, nhs_number, uk_mobile
from appfirst.settings import Settings

PRACTICE = "N0001"  # outside the pilot's arms: the batch does not move its figures
PATIENTS = 150
STAGGER = (50, 4)  # 50 patients every 4 s
# Seconds from upload to the first release: room for the worker to show the batch
# Scheduled first.
START_IN = 10.0
# The upload waits, for up to CATCH_UP_SECONDS, until the worker has at most this many
# records still to read (its /metrics lag): a worker far behind (the test suite's four
# processes on two cores) read the upload after its start time and showed the batch Sending
# at once, never Scheduled.
BEHIND_AT_MOST = 100
CATCH_UP_SECONDS = 90.0


def patient_list(pilot: Pilot, rng: random.Random) -> str:
    """Registered patients of the practice, and the rows an export gets wrong."""
    roster = pilot.scenario.roster(PRACTICE)
    chosen = rng.sample(roster, min(PATIENTS, len(roster)))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["NHS Number", "Surname", "Date of Birth", "Mobile Telephone", "Deceased"])
    for n, nhs in enumerate(chosen):
        writer.writerow([nhs, f"Patient{n}", "01/01/1960", uk_mobile(rng), ""])
    # Rows an export gets wrong (new patients, so each shows its own reason).
    writer.writerow(["9434765918", "Typo", "02/02/1970", uk_mobile(rng), ""])  # check digit
    writer.writerow([chosen[0], "Twice", "01/01/1960", uk_mobile(rng), ""])
    writer.writerow([nhs_number(rng), "Late", "03/03/1930", uk_mobile(rng), "Y"])
    writer.writerow([nhs_number(rng), "Nomobile", "04/04/1980", "", ""])
    writer.writerow([nhs_number(rng), "Landline", "05/05/1990", "0161 496 0000", ""])
    return "\ufeff" + out.getvalue()


async def run_batch(
    console: Console, settings: Settings, web_port: int, pilot: Pilot
) -> tuple[str, str]:
    """Upload, show the review list, follow the status: (batch id, the last status)."""
    rng = random.Random(pilot.seed + 7)
    base = f"http://127.0.0.1:{web_port}"
    token = {"Authorization": f"Bearer {settings.batch_token.get_secret_value()}"}
    async with httpx.AsyncClient(timeout=30, headers=token) as client:
        behind = await _catch_up(console, client, base)
        if behind > BEHIND_AT_MOST:
            console.print(f"the worker is still {behind} records behind; uploading anyway")
        start = datetime.now(UTC) + timedelta(seconds=START_IN)
        made = await client.post(
            f"{base}/batches",
            data={
                "ods": PRACTICE,
                "type": "questionnaire",
                "body": "Please tell us about your blood pressure: https://example.org/q",
                "at": start.isoformat(),
                "stagger": str(STAGGER[0]),
                "every": f"{STAGGER[1]}s",
            },
            files={"file": ("patients.csv", patient_list(pilot, rng).encode(), "text/csv")},
        )
        made.raise_for_status()
        batch: dict[str, Any] = made.json()
        batch_id = batch["batch_id"]
        console.print(
            f"batch {batch_id}: {batch['patient_list']} patients in the list, "
            f"{batch['contactable']} to contact, {batch['non_contactable']} cannot be contacted"
        )
        listed = await client.get(f"{base}/batches/{batch_id}/non-contactable.csv")
        table = Table(title="Review patient list: cannot be contacted")
        for column in ("Row", "Name", "Reason"):
            table.add_column(column)
        for row in csv.DictReader(io.StringIO(listed.text)):
            table.add_row(row["Row"], row["Name"], row["Reason"])
        console.print(table)
        return batch_id, await _follow(console, client, base, batch_id)


async def _catch_up(console: Console, client: httpx.AsyncClient, base: str) -> int:
    """Records the worker has still to read, once at most ``BEHIND_AT_MOST`` or after
    ``CATCH_UP_SECONDS``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + CATCH_UP_SECONDS
    said = False
    while True:
        behind = records_behind((await client.get(f"{base}/metrics")).text)
        if behind <= BEHIND_AT_MOST or loop.time() > end:
            return behind
        if not said:
            console.print(f"waiting for the worker to catch up ({behind} records behind)")
            said = True
        await asyncio.sleep(0.5)


def records_behind(metrics: str) -> int:
    """The sum of ``appfirst_consumer_lag`` over the partitions, from a /metrics page."""
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(metrics)
            if family.name == "appfirst_consumer_lag"
            for sample in family.samples
        )
    )


async def _follow(console: Console, client: httpx.AsyncClient, base: str, batch_id: str) -> str:
    """Print each change until Done, or until receipts have been quiet for a while once
    everyone is released (a lost callback keeps a batch Sending: the receipts
    reconciliation that follows fills it in)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 60
    quiet_since = loop.time()
    shown: tuple[Any, ...] | None = None
    status: dict[str, Any] = {}
    while loop.time() < end:
        answer = await client.get(f"{base}/batches/{batch_id}")
        if answer.status_code == 200:
            status = answer.json()
            now = tuple(status[k] for k in ("status", "released", "delivered", "failed_to_deliver"))
            if now != shown:
                shown = now
                quiet_since = loop.time()
                console.print(
                    f"  {status['status'].capitalize():<10} released {status['released']:>3} "
                    f"of {status['contactable']}, delivered {status['delivered']}, "
                    f"failed to deliver {status['failed_to_deliver']}, without a valid mobile "
                    f"{status['without_valid_mobile']}"
                )
            if status["status"] == "done":
                break
            released = status["released"] == status["contactable"]
            if released and loop.time() - quiet_since > 8:
                break
        await asyncio.sleep(0.5)
    return str(status.get("status", "unknown"))


async def final_status(console: Console, settings: Settings, web_port: int, batch: str) -> str:
    """The batch once the receipts reconciliation has run: Done, with its counters."""
    token = {"Authorization": f"Bearer {settings.batch_token.get_secret_value()}"}
    async with httpx.AsyncClient(timeout=30, headers=token) as client:
        return await _follow(console, client, f"http://127.0.0.1:{web_port}", batch)
