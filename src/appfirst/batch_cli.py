"""``appfirst batch``: batch messages from the command line, straight to Kafka (the same
records the worker's ``POST /batches`` writes)."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from appfirst.topics.models import MessageType

_TYPES = list(MessageType.__args__)  # type: ignore[attr-defined]


@click.group()
def batch() -> None:
    """Send, review, cancel and follow batch messages."""


def _when(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        raise click.BadParameter(
            "give a time zone, e.g. 2026-12-02T09:00:00+00:00", param_hint="--at"
        )
    return at


def _write_list(rows: list[tuple[str, ...]], out: Path | None) -> None:
    from appfirst.rules.batch import NON_CONTACTABLE_HEADER

    stream = out.open("w", newline="", encoding="utf-8") if out else sys.stdout
    try:
        writer = csv.writer(stream)
        writer.writerow(NON_CONTACTABLE_HEADER)
        writer.writerows(rows)
    finally:
        if out:
            stream.close()


def _prepare(path: Path, request: Any) -> tuple[Any, Any, Any]:
    from appfirst.jobs.batch_upload import Contactability, prepare
    from appfirst.settings import get_settings

    settings = get_settings()
    contacts = Contactability(settings)
    asyncio.run(contacts.load())
    now = datetime.now(UTC)
    handle = path.open(encoding="utf-8-sig", newline="")
    summary, records = prepare(
        handle,
        request,
        practice=contacts.practice(request.ods_code),
        failed_recently=contacts.failed_recently(now),
        now=now,
    )
    return settings, summary, (records, handle)


def _request(ods: str, message_type: str, body: str, at: str | None, stagger: Any) -> Any:
    from appfirst.jobs.batch_upload import Request
    from appfirst.rules.batch import parse_period

    count, every = stagger
    if (count is None) != (every is None):
        raise click.UsageError("--stagger and --every go together")
    return Request(
        ods_code=ods,
        message_type=message_type,  # type: ignore[arg-type]
        body=body,
        send_at=_when(at),
        stagger_count=count,
        stagger_every_seconds=parse_period(every) if every else None,
    )


@batch.command()
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ods", default="-", help="The practice, for its likely-to-fail setting.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def review(csv_file: Path, ods: str, out: Path | None) -> None:
    """List the patients of CSV_FILE who cannot be contacted, and why (nothing is sent)."""
    from appfirst.rules.batch import BatchFileError

    request = _request(ods, "sms", "review", None, (None, None))
    try:
        _, summary, (records, handle) = _prepare(csv_file, request)
        with handle:
            for _ in records:
                pass
    except BatchFileError as exc:
        raise click.ClickException(str(exc)) from exc
    _write_list(summary.non_contactable, out)
    click.echo(json.dumps(summary.as_json()), err=True)


@batch.command()
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ods", required=True, help="The sending practice's ODS code.")
@click.option("--type", "message_type", type=click.Choice(_TYPES), required=True)
@click.option(
    "--body-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option("--at", default=None, help="Send at this time (ISO 8601 with zone); default now.")
@click.option("--stagger", type=int, default=None, help="Patients released per period.")
@click.option("--every", default=None, help="The stagger's period: 30s, 15m, 2h, 1d.")
@click.option("--non-contactable", "out", type=click.Path(dir_okay=False, path_type=Path))
def send(
    csv_file: Path,
    ods: str,
    message_type: str,
    body_file: Path,
    at: str | None,
    stagger: int | None,
    every: str | None,
    out: Path | None,
) -> None:
    """Send the message in BODY_FILE to every patient of CSV_FILE who can be contacted."""
    from appfirst.jobs.kafka import publish
    from appfirst.rules.batch import BatchFileError

    body = body_file.read_text(encoding="utf-8").strip()
    request = _request(ods, message_type, body, at, (stagger, every))
    try:
        settings, summary, (records, handle) = _prepare(csv_file, request)
        with handle:
            asyncio.run(publish(settings, "batches", ((r.batch_id, r) for r in records)))
    except BatchFileError as exc:
        raise click.ClickException(f"nothing sent: {exc}") from exc
    if out:
        _write_list(summary.non_contactable, out)
    click.echo(json.dumps(summary.as_json()))


def _command(batch_id: str, kind: str) -> None:
    from appfirst.jobs.kafka import publish
    from appfirst.settings import get_settings
    from appfirst.topics.models import BatchEvent

    event = BatchEvent.model_validate(
        {"batch_id": batch_id, "kind": kind, "occurred_at": datetime.now(UTC)}
    )
    asyncio.run(publish(get_settings(), "batches", [(batch_id, event)]))


@batch.command()
@click.argument("batch_id")
def cancel(batch_id: str) -> None:
    """Cancel a scheduled or staggered batch: no patient not yet released is sent."""
    _command(batch_id, "cancel")
    click.echo(f"{batch_id}: cancel sent")


@batch.command("revoke-links")
@click.argument("batch_id")
def revoke_links(batch_id: str) -> None:
    """Revoke the batch's links for good: patients who open them see an error."""
    _command(batch_id, "revoke_links")
    click.echo(f"{batch_id}: links revoked")


@batch.command()
@click.argument("batch_id")
def status(batch_id: str) -> None:
    """The batch's latest status and counters (from `batch-status`)."""
    from appfirst.jobs.kafka import read_all
    from appfirst.settings import get_settings
    from appfirst.topics.models import BatchStatus

    found = [
        s
        for s in asyncio.run(read_all(get_settings(), "batch-status", BatchStatus, None))
        if s.batch_id == batch_id
    ]
    if not found:
        raise click.ClickException(f"no status for {batch_id} (yet)")
    click.echo(found[-1].model_dump_json(indent=2))
