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
from typing import TYPE_CHECKING, Any

from faust import web

from appfirst.errors import AppfirstError
from appfirst.jobs.batch_upload import Request, Summary, prepare
from appfirst.rules.batch import NON_CONTACTABLE_HEADER, BatchFileError, parse_period
from appfirst.streams.broadcast import BroadcastTable
from appfirst.topics.models import BatchEvent, BatchStatus

if TYPE_CHECKING:
    from appfirst.streams.context import Context
    from appfirst.streams.failed_numbers import FailedNumbers
    from appfirst.streams.router import Router

SPOOL_BYTES = 1 << 20


def _status(_: str, value: bytes, current: BatchStatus | None) -> BatchStatus | None:
    from appfirst.codecs import Decoder

    try:
        return Decoder(BatchStatus).decode(value)
    except AppfirstError:
        return None


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


def _csv(rows: list[tuple[str, ...]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(NON_CONTACTABLE_HEADER)
    writer.writerows(rows)
    return out.getvalue().encode()


class BatchApi:
    """The batch endpoints on the worker's web port (see the module's docstring)."""

    def __init__(self, context: Context, router: Router, failed: FailedNumbers) -> None:
        self.context = context
        self.settings = context.settings
        self.io = context.io
        self.topics = context.topics
        self.router = router
        self.failed = failed
        self._token = f"Bearer {context.settings.batch_token.get_secret_value()}".encode()
        # batch id -> its latest status, on every worker
        self.status_cache: BroadcastTable[BatchStatus] = context.broadcast(
            "batch-status", _status, before_ready=False
        )
        self._pages()

    def _authorised(self, request: web.Request) -> bool:
        return hmac.compare_digest(request.headers.get("Authorization", "").encode(), self._token)

    def _request(self, fields: dict[str, str]) -> Request:
        missing = [name for name in ("ods", "type", "body") if not fields.get(name)]
        if missing:
            raise BatchFileError(f"missing field(s): {', '.join(missing)}")
        at = fields.get("at")
        send_at = self.context.clock.now() if not at else datetime.fromisoformat(at)
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

    def _review(self, fields: dict[str, str], text: Any, now: datetime) -> tuple[Summary, Any]:
        req = self._request(fields)
        summary, records = prepare(
            text,
            req,
            practice=self.router.practice_cache.get(req.ods_code),
            failed_recently=self.failed.failed_recently,
            now=now,
        )
        return summary, records

    async def _command(self, view: web.View, request: web.Request, batch_id: str, kind: str) -> Any:
        if not self._authorised(request):
            return _refused(view)
        extra: dict[str, Any] = {}
        if kind == "saved":
            try:
                extra["message_id"] = (await request.json())["message_id"]
            except (ValueError, KeyError, TypeError):
                return view.json({"error": 'expected {"message_id": "..."}'}, status=400)
        elif self.status_cache.get(batch_id) is None:
            return view.json({"error": "no such batch (yet)"}, status=404)
        try:
            record = BatchEvent.model_validate(
                {
                    "batch_id": batch_id,
                    "kind": kind,
                    "occurred_at": self.context.clock.now(),
                    **extra,
                }
            )
        except ValueError as exc:
            return view.json({"error": str(exc)}, status=400)
        await self.io.send_acknowledged(
            self.topics.batches, batch_id.encode(), self.io.encode(record)
        )
        return view.json({"status": "accepted"}, status=202)

    def _pages(self) -> None:
        part = self
        page = self.context.app.page
        topics = self.context.topics

        @page("/batches/review")
        class BatchReview(web.View):
            async def post(self, request: web.Request) -> web.Response:
                if not part._authorised(request):
                    return _refused(self)
                fields, text = await _upload(request)
                fields.setdefault("ods", "-")
                fields.setdefault("type", "sms")
                fields.setdefault("body", "review")
                try:
                    summary, records = part._review(fields, text, part.context.clock.now())
                    for _ in records:
                        pass
                except (BatchFileError, ValueError) as exc:
                    return self.json({"error": str(exc)}, status=400)
                return self.bytes(
                    _csv(summary.non_contactable), content_type="text/csv", status=200
                )

        @page("/batches")
        class Batches(web.View):
            async def post(self, request: web.Request) -> web.Response:
                if not part._authorised(request):
                    return _refused(self)
                fields, text = await _upload(request)
                try:
                    summary, records = part._review(fields, text, part.context.clock.now())
                    for record in records:
                        await part.io.send(
                            topics.batches, record.batch_id.encode(), part.io.encode(record)
                        )
                except (BatchFileError, ValueError) as exc:
                    # Records already written have no plan: the batch is never sent.
                    return self.json({"error": str(exc)}, status=400)
                await part.io.durable()
                return self.json(
                    summary.as_json(),
                    status=201,
                    headers={"Location": f"/batches/{summary.batch_id}"},
                )

        @page("/batches/{batch_id}")
        class BatchView(web.View):
            async def get(self, request: web.Request, batch_id: str) -> web.Response:
                if not part._authorised(request):
                    return _refused(self)
                status = part.status_cache.get(batch_id)
                if status is None:
                    return self.json({"error": "no such batch (yet)"}, status=404)
                return self.json(status.model_dump(mode="json"))

        @page("/batches/{batch_id}/cancel")
        class BatchCancel(web.View):
            async def post(self, request: web.Request, batch_id: str) -> web.Response:
                return await part._command(self, request, batch_id, "cancel")  # type: ignore[no-any-return]

        @page("/batches/{batch_id}/revoke-links")
        class BatchRevokeLinks(web.View):
            async def post(self, request: web.Request, batch_id: str) -> web.Response:
                return await part._command(self, request, batch_id, "revoke_links")  # type: ignore[no-any-return]

        @page("/batches/{batch_id}/saved")
        class BatchSaved(web.View):
            async def post(self, request: web.Request, batch_id: str) -> web.Response:
                return await part._command(self, request, batch_id, "saved")  # type: ignore[no-any-return]

        @page("/batches/{batch_id}/non-contactable.csv")
        class BatchNonContactable(web.View):
            async def get(self, request: web.Request, batch_id: str) -> web.Response:
                if not part._authorised(request):
                    return _refused(self)
                from appfirst.jobs.batch_read import non_contactable

                rows = await non_contactable(part.settings, batch_id)
                if rows is None:
                    return self.json({"error": "no such batch"}, status=404)
                return self.bytes(_csv(rows), content_type="text/csv")

        @page("/links/{batch_id}")
        class Links(web.View):
            """For the link service: may a patient open this batch's link?"""

            async def get(self, request: web.Request, batch_id: str) -> web.Response:
                status = part.status_cache.get(batch_id)
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
