"""The batch endpoints on the worker's web port, for the practice's front end and the link
service. Every call but ``GET /links/{id}`` needs ``Authorization: Bearer
<APPFIRST_BATCH_TOKEN>``.

- ``POST /batches/review``: a CSV patient list in, the list of patients who cannot be
  contacted out (CSV), nothing sent.
- ``POST /batches``: a CSV (multipart field ``file``) with ``ods``, ``type``, ``body`` and
  optionally ``at``, ``stagger`` and ``every``: the batch is written to ``batches`` and
  answered 201 with its counts once the broker has every record.
- ``GET /batches/{id}``: the batch's status and counters (``batch-status``, on every
  worker); ``GET /batches/{id}/non-contactable.csv``: its review list again.
- ``POST /batches/{id}/cancel``, ``POST /batches/{id}/revoke-links``, ``POST
  /batches/{id}/saved`` (``{"message_id": ...}``, from the clinical record).
- ``GET /links/{id}``: whether the batch's links still work (revocation is final).

An upload is spooled to a temporary file (in memory up to 1 MiB, then on disk) and read
row by row: a 100,000-patient list never sits in memory.
"""

from __future__ import annotations

import csv
import hmac
import io
import tempfile
from datetime import datetime
from typing import Any

from faust import web

from appfirst.errors import AppfirstError
from appfirst.jobs.batch_upload import Request, Summary, prepare
from appfirst.rules.batch import NON_CONTACTABLE_HEADER, BatchFileError, parse_period
from appfirst.streams.app import app, clock, settings
from appfirst.streams.broadcast import BroadcastTable
from appfirst.streams.failed_numbers import failed_recently
from appfirst.streams.io import durable, encode, send, send_acknowledged
from appfirst.streams.router import practice_cache
from appfirst.streams.topics import batches
from appfirst.topics.models import BatchEvent, BatchStatus

_TOKEN = f"Bearer {settings.batch_token.get_secret_value()}".encode()
SPOOL_BYTES = 1 << 20


def _status(_: str, value: bytes, current: BatchStatus | None) -> BatchStatus | None:
    from appfirst.codecs import Decoder

    try:
        return Decoder(BatchStatus).decode(value)
    except AppfirstError:
        return None


# batch id -> its latest status, on every worker
status_cache: BroadcastTable[BatchStatus] = BroadcastTable(
    settings, settings.topic("batch-status"), _status
)


@app.task  # type: ignore[untyped-decorator]
async def follow_batch_status() -> None:
    await status_cache.run()


def _authorised(request: web.Request) -> bool:
    return hmac.compare_digest(request.headers.get("Authorization", "").encode(), _TOKEN)


def _refused(view: web.View) -> web.Response:
    return view.json({"error": "unauthorised"}, status=401)


async def _upload(request: web.Request) -> tuple[dict[str, str], Any]:
    """The form's fields, and the CSV spooled to a file opened for text reading."""
    fields: dict[str, str] = {}
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
    reader = await request.multipart()  # type: ignore[attr-defined]
    while (part := await reader.next()) is not None:
        if part.name == "file":
            while chunk := await part.read_chunk():
                spool.write(chunk)
        elif part.name:
            fields[part.name] = (await part.text()).strip()
    spool.seek(0)
    # utf-8-sig: a byte-order mark, as spreadsheets write, is not part of the first header.
    return fields, io.TextIOWrapper(spool, encoding="utf-8-sig", newline="")


def _request(fields: dict[str, str]) -> Request:
    missing = [name for name in ("ods", "type", "body") if not fields.get(name)]
    if missing:
        raise BatchFileError(f"missing field(s): {', '.join(missing)}")
    at = fields.get("at")
    send_at = clock.now() if not at else datetime.fromisoformat(at)
    if send_at.tzinfo is None:
        raise BatchFileError("`at` needs a time zone (e.g. 2026-12-02T09:00:00+00:00)")
    stagger = fields.get("stagger")
    every = fields.get("every")
    return Request(
        ods_code=fields["ods"],
        message_type=fields["type"],  # type: ignore[arg-type]
        body=fields["body"],
        send_at=send_at,
        stagger_count=int(stagger) if stagger else None,
        stagger_every_seconds=parse_period(every) if every else None,
        organisation_type=fields.get("organisation_type") or "gp",  # type: ignore[arg-type]
    )


def _csv(rows: list[tuple[str, ...]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(NON_CONTACTABLE_HEADER)
    writer.writerows(rows)
    return out.getvalue().encode()


def _review(fields: dict[str, str], text: Any, now: datetime) -> tuple[Summary, Any]:
    req = _request(fields)
    summary, records = prepare(
        text,
        req,
        practice=practice_cache.get(req.ods_code),
        failed_recently=failed_recently,
        now=now,
    )
    return summary, records


@app.page("/batches/review")
class BatchReview(web.View):
    async def post(self, request: web.Request) -> web.Response:
        if not _authorised(request):
            return _refused(self)
        fields, text = await _upload(request)
        fields.setdefault("ods", "-")
        fields.setdefault("type", "sms")
        fields.setdefault("body", "review")
        try:
            summary, records = _review(fields, text, clock.now())
            for _ in records:
                pass
        except (BatchFileError, ValueError) as exc:
            return self.json({"error": str(exc)}, status=400)
        return self.bytes(_csv(summary.non_contactable), content_type="text/csv", status=200)


@app.page("/batches")
class Batches(web.View):
    async def post(self, request: web.Request) -> web.Response:
        if not _authorised(request):
            return _refused(self)
        fields, text = await _upload(request)
        try:
            summary, records = _review(fields, text, clock.now())
            for record in records:
                await send(batches, record.batch_id.encode(), encode(record))
        except (BatchFileError, ValueError) as exc:
            # Records already written have no plan: the batch is never sent.
            return self.json({"error": str(exc)}, status=400)
        await durable()
        return self.json(
            summary.as_json(),
            status=201,
            headers={"Location": f"/batches/{summary.batch_id}"},
        )


@app.page("/batches/{batch_id}")
class BatchView(web.View):
    async def get(self, request: web.Request, batch_id: str) -> web.Response:
        if not _authorised(request):
            return _refused(self)
        status = status_cache.get(batch_id)
        if status is None:
            return self.json({"error": "no such batch (yet)"}, status=404)
        return self.json(status.model_dump(mode="json"))


async def _command(view: web.View, request: web.Request, batch_id: str, kind: str) -> Any:
    if not _authorised(request):
        return _refused(view)
    extra: dict[str, Any] = {}
    if kind == "saved":
        try:
            extra["message_id"] = (await request.json())["message_id"]
        except (ValueError, KeyError, TypeError):
            return view.json({"error": 'expected {"message_id": "..."}'}, status=400)
    elif status_cache.get(batch_id) is None:
        return view.json({"error": "no such batch (yet)"}, status=404)
    try:
        record = BatchEvent.model_validate(
            {"batch_id": batch_id, "kind": kind, "occurred_at": clock.now(), **extra}
        )
    except ValueError as exc:
        return view.json({"error": str(exc)}, status=400)
    await send_acknowledged(batches, batch_id.encode(), encode(record))
    return view.json({"status": "accepted"}, status=202)


@app.page("/batches/{batch_id}/cancel")
class BatchCancel(web.View):
    async def post(self, request: web.Request, batch_id: str) -> web.Response:
        return await _command(self, request, batch_id, "cancel")  # type: ignore[no-any-return]


@app.page("/batches/{batch_id}/revoke-links")
class BatchRevokeLinks(web.View):
    async def post(self, request: web.Request, batch_id: str) -> web.Response:
        return await _command(self, request, batch_id, "revoke_links")  # type: ignore[no-any-return]


@app.page("/batches/{batch_id}/saved")
class BatchSaved(web.View):
    async def post(self, request: web.Request, batch_id: str) -> web.Response:
        return await _command(self, request, batch_id, "saved")  # type: ignore[no-any-return]


@app.page("/batches/{batch_id}/non-contactable.csv")
class BatchNonContactable(web.View):
    async def get(self, request: web.Request, batch_id: str) -> web.Response:
        if not _authorised(request):
            return _refused(self)
        from appfirst.jobs.batch_read import non_contactable

        rows = await non_contactable(settings, batch_id)
        if rows is None:
            return self.json({"error": "no such batch"}, status=404)
        return self.bytes(_csv(rows), content_type="text/csv")


@app.page("/links/{batch_id}")
class Links(web.View):
    """For the link service: may a patient open this batch's link?"""

    async def get(self, request: web.Request, batch_id: str) -> web.Response:
        status = status_cache.get(batch_id)
        if status is None:
            return self.json({"error": "no such batch"}, status=404)
        return self.json(
            {
                "batch_id": batch_id,
                "revoked": status.links_revoked,
                "revoked_at": status.links_revoked_at.isoformat()
                if status.links_revoked_at
                else None,
            }
        )
