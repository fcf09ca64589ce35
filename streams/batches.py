"""Batches: holds each uploaded batch's patients until their time, releases them to routing
at the schedule's and stagger's pace, and keeps the batch's status and counters.

- **Data in Kafka, not timers in memory.** The upload writes every contactable patient,
  then the plan, to ``batches`` keyed by batch id (so in order, on one partition). This
  agent keeps them in changelogged tables: ``batches`` (one ``rules.batch.Progress`` per
  batch) and ``batch-patients`` (the patients not yet released). A timer on the owner of
  the partition releases what is due; a restart or a rebalance recovers both tables and
  goes on from ``released``.
- **Released once.** Each release writes the patients' send requests, makes them durable,
  then records how far it got and deletes their rows. A crash in between releases some
  again, under the same message ids, and routing makes one dispatch of each.
- **Cancel** deletes what is not released yet; what was released is not recalled.
  **Revoking links** is final, and shows on ``batch-status``.
- **Counters** come from ``batch-progress`` (each batch message's outcome, written by the
  per-message agent's ``Status`` part, ``streams/status.py``), counted once per message
  (``batch-marks``).
- **Every row ends**: patients on release or cancel; a batch and its marks
  ``BATCH_KEEP_SECONDS`` after it finished (the 7 days a patient may respond, and a day).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from appfirst.rules.batch import Progress, message_id
from appfirst.streams.io import loads, log
from appfirst.topics.models import BATCH_PLAN_FIELDS, BatchEvent, BatchStatus, SendRequest

if TYPE_CHECKING:
    from appfirst.streams.context import Context

RELEASE_CHUNK = 2_000  # most patients one tick releases per batch: the timer yields between
BATCH_KEEP_SECONDS = 8 * 86400
# The plan as the progress row keeps it (``send_at`` as epoch seconds, set apart).
PLAN_FIELDS = tuple(f for f in BATCH_PLAN_FIELDS if f != "send_at")
RECOUNT_SECONDS = 5.0


def _patient_key(batch_id: str, seq: int) -> str:
    return f"{batch_id}|{seq}"


class Batches:
    """Each uploaded batch's row and patients (agent ``collect``), their release at the
    plan's pace and the batch's status (timer ``release``)."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.clock = context.clock
        self.io = context.io
        self.topics = topics = context.topics
        self.progress_table: Any = context.table("batches")
        self.patients: Any = context.table("batch-patients", raw_values=True)
        # "settled|<message_id>", "saved|<message_id>" -> the counters it adds
        self.marks: Any = context.table("batch-marks")
        # Batches whose status changed since it was last published (published once a tick).
        self._dirty: set[str] = set()
        # The marks are the counters' truth: one row per counted message, written in one go.
        # The sums are kept here, and made again from the marks every ``RECOUNT_SECONDS``
        # while a batch is open (and on taking a batch over): a mark recovered late, after a
        # rebalance, is then counted within seconds, never lost to a sum made before it
        # arrived.
        self._counts: dict[str, Counter[str]] = {}
        self._recounted: dict[str, float] = {}  # batch id -> when (monotonic)
        self._published: dict[str, tuple[Any, ...]] = {}

        self.collect: Any = context.agent(topics.batches_source)(self._collect)
        context.app.timer(interval=0.5)(self.release)
        context.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]

    def _progress(self, batch_id: str, partition: int) -> Progress:
        raw = self.progress_table.get(batch_id)
        return Progress.from_json(raw) if raw else Progress(batch_id, partition)

    async def _collect(self, stream: Any) -> None:
        async for event in stream.events():
            if self.io.short_topic(event.message.topic) == "batches":
                record = await self.io.decode(event, BatchEvent, "batches")
                if record is not None:
                    self._apply(record, event.message.partition)
            else:
                await self._count(event)

    def _apply(self, record: BatchEvent, partition: int) -> None:
        # One write per record, each to one row: a crash cannot leave half of a change.
        patients = self.patients
        p = self._progress(record.batch_id, partition)
        new = p
        if record.kind == "patient":
            assert record.seq is not None
            if record.seq >= p.released and p.cancelled_at is None:
                patients[_patient_key(record.batch_id, record.seq)] = json.dumps(
                    {"n": record.nhs_number, "m": record.mobile, "e": record.email},
                    separators=(",", ":"),
                ).encode()
        elif record.kind == "plan" and p.plan is None:
            plan = {k: getattr(record, k) for k in PLAN_FIELDS}
            assert record.send_at is not None
            plan["send_at"] = record.send_at.timestamp()
            new = Progress.from_json({**p.to_json(), "plan": plan})
        elif record.kind == "cancel" and p.cancelled_at is None:
            new = Progress.from_json(
                {**p.to_json(), "cancelled_at": record.occurred_at.timestamp()}
            )
            for seq in range(p.released, p.contactable):
                patients.pop(_patient_key(record.batch_id, seq), None)
        elif record.kind == "revoke_links" and p.revoked_at is None:
            new = Progress.from_json({**p.to_json(), "revoked_at": record.occurred_at.timestamp()})
        elif record.kind == "saved":
            assert record.message_id is not None
            self._mark(record.batch_id, partition, f"saved|{record.message_id}", {"saved": 1})
        if new != p:
            self.progress_table[record.batch_id] = new.to_json()
        self._dirty.add(record.batch_id)

    async def _count(self, event: Any) -> None:
        """One batch message's outcome (``batch-progress``, internal JSON), counted once."""
        message = event.message
        try:
            fact = loads(message.value)
            batch_id = message.key.decode()
            mid = str(fact["message_id"])
            outcome = fact["outcome"]
            if outcome not in ("delivered", "failed", "sent", "not_sent"):
                raise ValueError(f"unknown outcome {str(outcome)[:40]!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            await self.io.reject(message, f"not a batch outcome: {exc}", "batches")
            return
        self.io.count_in(event)
        adds = {"settled": 1}
        if outcome in ("delivered", "failed"):
            adds[outcome] = 1
        if fact.get("without_valid_mobile"):
            adds["without_valid_mobile"] = 1
        self._mark(batch_id, message.partition, f"settled|{mid}", adds)
        self._dirty.add(batch_id)

    def _mark(self, batch_id: str, partition: int, key: str, adds: dict[str, int]) -> None:
        if self.marks.get(key) is not None:
            return  # counted already: a repeat, or the same record read again
        self.marks[key] = adds
        if batch_id in self._counts:
            self._counts[batch_id].update(adds)

    def _recount(self, p: Progress) -> Counter[str]:
        """The batch's counters from its marks (only released messages have any)."""
        counts: Counter[str] = Counter()
        for seq in range(p.released):
            mid = message_id(p.batch_id, seq)
            for kind in ("settled", "saved"):
                adds = self.marks.get(f"{kind}|{mid}")
                if adds:
                    counts.update(adds)
        self._counts[p.batch_id] = counts
        self._recounted[p.batch_id] = time.monotonic()
        return counts

    async def release(self) -> None:
        if not self.context.tables_ready():
            return
        progress_table = self.progress_table
        owned = self.context.owned_partitions("batches")
        now = self.clock.now().timestamp()
        for batch_id, raw in list(progress_table.items()):
            p = Progress.from_json(raw)
            if p.partition not in owned:
                continue
            stale = time.monotonic() - self._recounted.get(batch_id, 0.0) > RECOUNT_SECONDS
            if batch_id not in self._counts or (p.finished_at is None and stale):
                self._recount(p)
            p = p.counted(self._counts.get(batch_id, {}))
            upto = min(p.due(now), p.released + RELEASE_CHUNK)
            if upto > p.released:
                p = await self._release(p, upto)
            if p.status(now) in ("done", "cancelled"):
                if p.finished_at is None:
                    # Kept in the row, so that a restart does not start the 8 days again.
                    with self.context.acting_for_partition("batches", p.partition):
                        progress_table[batch_id] = {**progress_table[batch_id], "finished_at": now}
                elif now - p.finished_at > BATCH_KEEP_SECONDS:
                    self._forget(p)
                    continue
            self._dirty.add(batch_id)  # published only if what it shows changed
        await self._publish(owned, now)

    async def _release(self, p: Progress, upto: int) -> Progress:
        """Hand patients ``p.released`` .. ``upto - 1`` to routing."""
        assert p.plan is not None
        plan = p.plan
        now = self.clock.now()
        for seq in range(p.released, upto):
            raw = self.patients.get(_patient_key(p.batch_id, seq))
            if raw is None:
                continue  # released before a crash, its row deleted: routing has it
            row = json.loads(raw)
            request = SendRequest.model_validate(
                {
                    "message_id": message_id(p.batch_id, seq),
                    "requested_at": now,
                    "ods_code": plan["ods_code"],
                    "organisation_type": plan.get("organisation_type") or "gp",
                    "origin": "batch",
                    "batch_id": p.batch_id,
                    "message_type": plan["message_type"],
                    "body": plan["body"],
                    "patient": {"nhs_number": row["n"], "mobile": row["m"], "email": row["e"]},
                }
            )
            await self.io.send(
                self.topics.send_requests, request.message_id.encode(), self.io.encode(request)
            )
        await self.io.durable()  # the requests are in Kafka before the release is recorded
        with self.context.acting_for_partition("batches", p.partition):
            for seq in range(p.released, upto):
                self.patients.pop(_patient_key(p.batch_id, seq), None)
            stored = Progress.from_json(self.progress_table[p.batch_id])
            self.progress_table[p.batch_id] = {**stored.to_json(), "released": upto}
        new = Progress.from_json({**p.to_json(), "released": upto})
        log.info(
            "batch released batch_id=%s released=%d of %d",
            p.batch_id,
            upto,
            p.contactable,
            extra={"batch_id": p.batch_id},
        )
        return new

    def _forget(self, p: Progress) -> None:
        with self.context.acting_for_partition("batches", p.partition):
            for seq in range(p.contactable):
                self.patients.pop(_patient_key(p.batch_id, seq), None)  # any a crash left behind
                for kind in ("settled", "saved"):
                    self.marks.pop(f"{kind}|{message_id(p.batch_id, seq)}", None)
            self.progress_table.pop(p.batch_id, None)
        self._counts.pop(p.batch_id, None)
        self._recounted.pop(p.batch_id, None)
        self._dirty.discard(p.batch_id)

    def status_of(self, p: Progress, now: float) -> BatchStatus | None:
        state = p.status(now)
        if state is None or p.plan is None:
            return None
        plan = p.plan

        def at(value: float | None) -> datetime | None:
            return datetime.fromtimestamp(value, UTC) if value is not None else None

        next_at = p.next_release_at()
        return BatchStatus.model_validate(
            {
                "batch_id": p.batch_id,
                "status": state,
                "ods_code": plan["ods_code"],
                "message_type": plan["message_type"],
                "patient_list": plan["patient_list"],
                "contactable": plan["contactable"],
                "non_contactable": plan["non_contactable"],
                "without_valid_mobile": plan["without_valid_mobile"] + p.without_valid_mobile,
                "released": p.released,
                "delivered": p.delivered,
                "failed_to_deliver": p.failed,
                "saved": p.saved,
                "send_at": at(plan["send_at"]),
                "stagger_count": plan.get("stagger_count"),
                "stagger_every_seconds": plan.get("stagger_every_seconds"),
                "next_release_at": at(next_at) if state in ("scheduled", "sending") else None,
                "cancelled_at": at(p.cancelled_at),
                "links_revoked": p.revoked_at is not None,
                "links_revoked_at": at(p.revoked_at),
                "updated_at": self.clock.now(),
            }
        )

    async def _publish(self, owned: set[int], now: float) -> None:
        """The status of every batch that changed, once: what a practice's screen shows."""
        for batch_id in list(self._dirty):
            raw = self.progress_table.get(batch_id)
            self._dirty.discard(batch_id)
            if raw is None:
                continue
            p = Progress.from_json(raw).counted(self._counts.get(batch_id, {}))
            if p.partition not in owned:
                continue
            status = self.status_of(p, now)
            if status is None:
                continue
            shown = tuple(v for k, v in status.model_dump().items() if k != "updated_at")
            if self._published.get(batch_id) == shown:
                continue
            await self.io.send(self.topics.batch_status, batch_id.encode(), self.io.encode(status))
            self._published[batch_id] = shown

    async def _on_revoked(self, app: Any, revoked: Any, **kwargs: Any) -> None:
        # The next owner publishes from the recovered table, and counts again from the marks.
        self._published.clear()
        self._counts.clear()
        self._recounted.clear()
