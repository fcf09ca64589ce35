"""Metrics: the pilot's statistics onto ``pilot-metrics``, in three stages.

1. ``MessageFacts`` takes every event of a message (keyed by message_id, from the
   per-message agent of ``streams/messages.py``) and turns it into facts (sent, read,
   fallback, responded, each once) onto ``metric-facts``, each in the partition its arm,
   message type and practice hash to: one record per partition and batch of events.
2. ``aggregate`` keeps ``ArmStats`` per arm, message type and practice. A timer sends the
   matured counts of each practice it owns, when they change, to ``practice-stats`` keyed
   by message type, so that one place sees every practice of a message type, and keyed
   ``all``, whose collector sums each practice's types (a fact is counted once, under its
   own type).
   ``aggregate`` also counts each fact, in the same row, on its message's London day of
   dispatch (days kept for ``METRIC_TREND_DAYS``); the snapshot carries them. It takes
   facts a batch at a time (``METRICS_BATCH``, ``METRICS_WITHIN``) and writes each row
   once per batch.
3. ``collect`` keeps the latest counts of every practice per message type; a timer
   publishes ``arm_rate`` (summed over practices), ``comparison`` (practices as the unit,
   ``rules/stats.py``) and ``trend`` (daily, summed over practices) records when they
   change.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import date
from typing import TYPE_CHECKING, Any

from appfirst.rules.pilot import (
    COUNTED,
    ArmStats,
    Counts,
    Fact,
    Observation,
    count_day,
    epoch,
    kept_days,
    message_facts,
    refused_response,
    sum_types,
)
from appfirst.rules.stats import Comparison, Practice, comparable, compare, load_statistics
from appfirst.streams.app import acting_for
from appfirst.streams.io import loads
from appfirst.topics.catalogue import FACTS_PER_RECORD, SEND_OUTCOMES, partition_for
from appfirst.topics.models import Arm, PilotMetric

if TYPE_CHECKING:
    from appfirst.streams.context import Context
    from appfirst.streams.messages import Seen

ARMS: tuple[Arm, ...] = ("treatment", "control")
ALL = "all"  # the message type that stands for every type
SNAPSHOT_RECORD_BYTES = 256 * 1024  # practice snapshots per record: a quarter of the 1 MB limit


class Metrics:
    """The three stages above: facts per message, counts per practice, metrics per type."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.settings = context.settings
        self.clock = context.clock
        self.app = context.app
        self.io = context.io
        self.topics = topics = context.topics
        # arm|type|ods -> {"partition": p, "stats": ArmStats JSON,
        #   "days": {London date of dispatch: [sent, read, fallbacks, responded]}} (the trend)
        self.stats_table = context.table("arm-stats")
        # collector|arm|ods (|type in the collector of all) -> {"partition": p,
        #   "counts": {horizon: [sent, responded, read, fb]},
        #   "days": {date: [sent, read, fb, resp]}}
        # A row per practice, not per collector: a snapshot then rewrites one practice's
        # counts, not every practice's (at national scale, thousands, times the types for
        # ``all``).
        self.practice_table = context.table("practice-summaries")
        self._sent_snapshots: dict[str, str] = {}
        self._published: dict[str, Any] = {}
        self._statistics_loaded = False
        self.aggregate: Any = context.agent(topics.metric_facts)(self._aggregate)
        context.app.timer(interval=self.settings.metrics_publish_seconds)(self.snapshot_practices)
        self.collect: Any = context.agent(topics.practice_stats)(self._collect)
        context.app.timer(interval=self.settings.metrics_publish_seconds)(self.publish)

    async def _aggregate(self, stream: Any) -> None:
        # A batch at a time: a practice's row is written once per batch, not once per fact.
        # Facts come keyed by practice and type, so a batch holds many of each: one changelog
        # record per row and batch, where a write per fact would cost one per fact.
        settings = self.settings
        async for batch in stream.take_events(
            settings.metrics_batch, within=settings.metrics_within
        ):
            facts: list[tuple[Any, Fact]] = []
            for event in batch:
                if not self.context.current(event):
                    continue  # read again by the partition's owner (streams/rewind.py)
                taken = _facts_of(event, settings.partitions)
                if isinstance(taken, str):
                    await self.io.reject(event.message, f"not metric facts: {taken}", "metrics")
                    continue
                self.io.count_in(event)
                facts.extend((event, fact) for fact in taken)
            self._aggregate_facts(facts)  # an error exits the worker (streams/app.crash_only)

    def _aggregate_facts(self, facts: list[tuple[Any, Fact]]) -> None:
        settings = self.settings
        # key -> (stats, trend days, the last event counted)
        rows: dict[str, tuple[ArmStats, dict[str, list[int]], Any]] = {}
        for event, fact in facts:
            key = fact.aggregate_key()
            if key in rows:
                stats, days, _ = rows[key]
            else:
                raw = self.stats_table.get(key)
                stats = (
                    ArmStats.from_json(raw["stats"], settings.metric_horizons)
                    if raw
                    else ArmStats.new(settings.metric_horizons)
                )
                days = {d: list(row) for d, row in (raw or {}).get("days", {}).items()}
            stats.add(fact)
            count_day(days, fact)
            rows[key] = (stats, days, event)
        now = self.clock.now().timestamp()
        # Every row is made before any is written: an error part-way (the process exits, the
        # batch is read again) must not leave some rows counted and the rest not.
        updates = []
        for key, (stats, days, event) in rows.items():
            stats.fold(now)
            row = {
                "partition": event.message.partition,
                "stats": stats.to_json(),
                "days": kept_days(days, now, settings.metric_trend_days),
            }
            updates.append((key, row, event))
        for key, row, event in updates:
            with acting_for(event):  # each key's changelog partition is its events'
                self.stats_table[key] = row

    async def snapshot_practices(self) -> None:
        """Each owned practice's matured counts, to the message type's collector."""
        settings = self.settings
        if self.app.rebalancing:
            return
        owned = self.context.owned_partitions("metric-facts")
        now = self.clock.now().timestamp()
        to: dict[str, list[bytes]] = {}  # collector -> its practices' snapshots
        changed: list[tuple[str, str]] = []
        for key, raw in list(self.stats_table.items()):
            if raw["partition"] not in owned:
                continue
            arm, message_type, ods = key.split("|", 2)
            stats = ArmStats.from_json(raw["stats"], settings.metric_horizons)
            days = kept_days(raw["days"], now, settings.metric_trend_days)
            counts = {
                str(h): [c.sent, c.responded, c.read, c.fallbacks]
                for h, c in stats.snapshot(now).items()
            }
            snapshot = {
                "arm": arm,
                "ods": ods,
                "type": message_type,
                "counts": counts,
                "days": days,
            }
            value = json.dumps(snapshot, sort_keys=True)
            if self._sent_snapshots.get(key) == value:
                continue
            # To its type's collector, and to the collector of ``all``, which sums the types
            # (counting ``all`` as facts cost a second record per fact).
            for collector in (message_type, ALL):
                to.setdefault(collector, []).append(value.encode())
            changed.append((key, value))
        # A record per collector (or per SNAPSHOT_RECORD_BYTES of snapshots), not per
        # practice: nationally thousands of practices change as their counts mature.
        for collector, values in to.items():
            for chunk in by_size(values, SNAPSHOT_RECORD_BYTES):
                payload = b'{"snapshots": [' + b", ".join(chunk) + b"]}"
                await self.io.send(self.topics.practice_stats, collector.encode(), payload)
        self._sent_snapshots.update(changed)

    async def _collect(self, stream: Any) -> None:
        async for event in stream.events():
            taken = _snapshots_of(event.message.key, event.message.value)
            if isinstance(taken, str):
                await self.io.reject(event.message, f"not practice snapshots: {taken}", "metrics")
                continue
            self.io.count_in(event)
            for collector, practice, snapshot in taken:
                self.practice_table[f"{collector}|{practice}"] = {
                    "partition": event.message.partition,
                    "counts": snapshot["counts"],
                    "days": snapshot["days"],
                }

    async def publish(self) -> None:
        if self.app.rebalancing:
            return
        io = self.io
        topics = self.topics
        owned = self.context.owned_partitions("practice-stats")
        now = self.clock.now()
        published = self._published
        rows_of = collected(list(self.practice_table.items()), owned)
        for message_type, (practices, days) in rows_of.items():
            if message_type == ALL:
                practices, days = sum_types(practices), sum_types(days)
            for horizon in self.settings.metric_horizons:
                for arm, counts in arm_totals(practices, horizon).items():
                    if arm not in ARMS:
                        continue
                    metric_key = f"arm_rate|{arm}|{message_type}|{horizon}"
                    counted = (counts.sent, counts.responded, counts.read, counts.fallbacks)
                    if published.get(metric_key) == counted:
                        continue
                    metric = PilotMetric(
                        kind="arm_rate",
                        key=metric_key,
                        arm=arm,
                        message_type=message_type,
                        horizon_seconds=horizon,
                        sent=counts.sent,
                        responded=counts.responded,
                        response_rate=counts.response_rate,
                        read=counts.read,
                        fallbacks=counts.fallbacks,
                        updated_at=now,
                    )
                    await io.send(topics.pilot_metrics, metric_key.encode(), io.encode(metric))
                    published[metric_key] = counted
                rows = practice_rows(practices, horizon)
                comparison_key = f"comparison|{message_type}|{horizon}"
                fingerprint = sorted((p.arm, p.sent, p.responded) for p in rows)
                if published.get(comparison_key) == fingerprint:
                    continue
                if comparable(rows) and not self._statistics_loaded:
                    await asyncio.to_thread(load_statistics)
                    self._statistics_loaded = True
                comparison = comparison_metric(message_type, horizon, compare(rows), now)
                await io.send(topics.pilot_metrics, comparison_key.encode(), io.encode(comparison))
                published[comparison_key] = fingerprint
            for (arm, day), row in sorted(daily_totals(days).items()):
                trend_key = f"trend|{arm}|{message_type}|{day}"
                if arm not in ARMS or published.get(trend_key) == row:
                    continue
                sent, read, fallbacks, responded = row
                trend = PilotMetric(
                    kind="trend",
                    key=trend_key,
                    arm=arm,
                    message_type=message_type,
                    day=date.fromisoformat(day),
                    sent=sent,
                    read=read,
                    fallbacks=fallbacks,
                    responded=responded,
                    updated_at=now,
                )
                await io.send(topics.pilot_metrics, trend_key.encode(), io.encode(trend))
                published[trend_key] = row


def _facts_of(event: Any, partitions: int) -> list[Fact] | str:
    """The record's facts, or why they are not: a record no agent can count must go to
    dead-letter, not fail the agent on every restart. A record is counted whole or not at
    all (a dead letter is then the whole of what was not counted).

    ``{"facts": [...]}`` as ``MessageFacts.flush`` sends them, or one fact keyed by its
    practice as workers before it sent (still read, for an upgrade with facts in flight)."""
    try:
        data = loads(event.message.value)
        if isinstance(data, dict) and "facts" in data:
            if not isinstance(data["facts"], list):
                raise TypeError("facts must be a list")
            facts = [Fact(**item) for item in data["facts"]]
            key = None
        else:
            facts = [Fact(**data)]
            key = event.message.key.decode()
    except (ValueError, TypeError, AttributeError) as exc:
        return type(exc).__name__
    for fact in facts:
        numbers = (fact.dispatched_at, fact.delay)
        names = (fact.arm, fact.message_type, fact.ods_code)
        if (
            fact.kind not in ("sent", *COUNTED)
            or not all(isinstance(n, (int, float)) and math.isfinite(n) for n in numbers)
            or not all(isinstance(n, str) for n in names)
        ):
            return "a field of the wrong kind"
        # A practice's counts live on one partition: its key's.
        if key is not None and key != fact.aggregate_key():
            return "keyed by another practice"
        if key is None and event.message.partition != partition_for(
            fact.aggregate_key().encode(), partitions
        ):
            return "in another practice's partition"
    return facts


def _snapshots_of(key: bytes | None, value: bytes | None) -> list[tuple[str, str, Any]] | str:
    """The record's (collector, practice, snapshot) triples, or why they are not: taken
    whole or not at all. ``{"snapshots": [...]}`` as ``snapshot_practices`` sends them, or
    one snapshot as workers before it sent (still read, for an upgrade with snapshots in
    flight)."""
    try:
        collector = key.decode()  # type: ignore[union-attr]  # None: AttributeError
        data = loads(value)
        many = data["snapshots"] if isinstance(data, dict) and "snapshots" in data else [data]
        if not isinstance(many, list):
            raise TypeError("snapshots must be a list")
        taken = []
        for snapshot in many:
            practice = f"{snapshot['arm']}|{snapshot['ods']}"
            if collector == ALL:
                practice += f"|{snapshot['type']}"
            if not isinstance(snapshot["counts"], dict) or not isinstance(snapshot["days"], dict):
                raise TypeError("counts and days must be objects")
            taken.append((collector, practice, snapshot))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return type(exc).__name__
    return taken


def by_size(values: list[bytes], limit: int) -> list[list[bytes]]:
    """``values`` in order, in runs of at most ``limit`` bytes (a value longer than that
    alone in its run)."""
    runs: list[list[bytes]] = []
    size = limit
    for value in values:
        if size + len(value) > limit:
            runs.append([])
            size = 0
        runs[-1].append(value)
        size += len(value)
    return runs


def facts_by_partition(facts: list[Fact], partitions: int) -> dict[int, list[Fact]]:
    """The facts grouped by the partition of ``metric-facts`` their practice's key hashes
    to, in order."""
    grouped: dict[int, list[Fact]] = {}
    for fact in facts:
        partition = partition_for(fact.aggregate_key().encode(), partitions)
        grouped.setdefault(partition, []).append(fact)
    return grouped


def collected(rows: list[tuple[str, Any]], owned: set[int]) -> dict[str, tuple[Any, Any]]:
    """collector -> (practice -> counts, practice -> days), for the owned partitions."""
    result: dict[str, tuple[Any, Any]] = {}
    for key, raw in rows:
        if raw["partition"] not in owned:
            continue
        collector, practice = key.split("|", 1)
        practices, days = result.setdefault(collector, ({}, {}))
        practices[practice] = raw["counts"]
        days[practice] = raw["days"]
    return result


def arm_totals(practices: dict[str, Any], horizon: int) -> dict[str, Counts]:
    totals: dict[str, Counts] = {arm: Counts() for arm in ARMS}
    for practice, by_horizon in practices.items():
        arm = practice.split("|", 1)[0]
        sent, responded, read, fallbacks = by_horizon.get(str(horizon), [0, 0, 0, 0])
        t = totals.setdefault(arm, Counts())
        t.sent += sent
        t.responded += responded
        t.read += read
        t.fallbacks += fallbacks
    return totals


def daily_totals(days: dict[str, Any]) -> dict[tuple[str, str], list[int]]:
    """(arm, London date) -> [sent, read, fallbacks, responded], summed over practices."""
    totals: dict[tuple[str, str], list[int]] = {}
    for practice, by_day in days.items():
        arm = practice.split("|", 1)[0]
        for day, row in by_day.items():
            total = totals.setdefault((arm, day), [0] * 4)
            for i, n in enumerate(row):
                total[i] += n
    return totals


def practice_rows(practices: dict[str, Any], horizon: int) -> list[Practice]:
    rows = []
    for practice, by_horizon in practices.items():
        arm = practice.split("|", 1)[0]
        if arm not in ARMS:
            continue
        sent, responded, _, _ = by_horizon.get(str(horizon), [0, 0, 0, 0])
        rows.append(Practice(arm, sent, responded))
    return rows


def comparison_metric(
    message_type: str, horizon: int, result: Comparison | None, now: Any
) -> PilotMetric:
    base: dict[str, Any] = {
        "kind": "comparison",
        "key": f"comparison|{message_type}|{horizon}",
        "message_type": message_type,
        "horizon_seconds": horizon,
        "method": result.method if result else "insufficient_practices",
        "updated_at": now,
    }
    if result is not None:
        base |= {
            "treatment_rate": result.treatment.rate,
            "control_rate": result.control.rate,
            "difference": result.difference,
            "ci_low": result.ci_low,
            "ci_high": result.ci_high,
            "p_value": result.p_value,
            "naive_ci_low": result.naive_ci_low,
            "naive_ci_high": result.naive_ci_high,
            "naive_p_value": result.naive_p_value,
            "icc": result.icc,
            "design_effect": result.design_effect,
            "srm_p_value": result.srm_p_value,
            "treatment_practices": result.treatment.practices,
            "control_practices": result.control.practices,
            "treatment_sent": result.treatment.sent,
            "control_sent": result.control.sent,
        }
    return PilotMetric.model_validate(base)


class MessageFacts:
    """Stage 1: each message's events become the pilot's facts, each once, onto
    ``metric-facts`` (for ``streams/messages.py``, whose row holds this stage's part:
    ``{"d": [arm, type, dispatched_at, ods] or None, "v"/"read"/...: t, "e": its end}``)."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.io = context.io
        self.topics = context.topics
        self.partitions = context.settings.partitions
        self._pending: list[Fact] = []

    def end(self, state: Any) -> float:
        return float(state["e"])

    def begin(self) -> None:
        """A batch of the per-message agent begins: nothing of an earlier one is held."""
        self._pending.clear()

    async def flush(self) -> None:
        """Send the batch's facts: one record per partition of ``metric-facts`` (up to
        ``FACTS_PER_RECORD`` facts each), each fact in the partition its practice's key
        hashes to, as a record keyed by it would be. A record per fact cost one
        ``metric-facts`` record per event counted (0.6 of the worker's 3.9 per event)."""
        pending, self._pending = self._pending, []
        for partition, facts in facts_by_partition(pending, self.partitions).items():
            for start in range(0, len(facts), FACTS_PER_RECORD):
                chunk = facts[start : start + FACTS_PER_RECORD]
                payload = json.dumps({"facts": [vars(f) for f in chunk]}).encode()
                await self.io.send(self.topics.metric_facts, None, payload, partition=partition)

    def _observe(self, seen: Seen) -> tuple[Observation, float, tuple[str, ...] | None] | None:
        """(kind, when, (arm, type, ods) for a dispatch) or None to skip."""
        value = seen.value
        if seen.topic == SEND_OUTCOMES:
            return "seen", epoch(value.at), None
        if seen.topic == "dispatches":
            # The pilot counts messages that were sent, by practices in an arm.
            if value.arm is None or value.channel == "none":
                return None
            sent_as = (value.arm, value.message_type, value.ods_code)
            return "sent", epoch(value.dispatched_at), sent_as
        if seen.topic == "read-receipts":
            return "read", epoch(value.read_at), None
        if seen.topic == "fallbacks":
            return "fallback", epoch(value.emitted_at), None
        if seen.topic == "responses":
            return "responded", epoch(value.responded_at), None
        return None

    async def take(self, seen: Seen, stored: Any) -> Any:
        """The message's new state after ``seen`` (having sent its new facts), or None if
        there is nothing to write."""
        observed = self._observe(seen)
        if observed is None:
            return None
        kind, at, sent_as = observed
        state = dict(stored or {})
        if kind == "responded":
            refused = refused_response(state, at)
            if refused is not None:
                await self.io.reject(seen.event.message, refused, "metrics")  # never counted
                return None
        facts = message_facts(state, kind, at, sent_as)
        if kind == "seen" and stored is not None and state.get("v") == stored.get("v"):
            return None  # an outcome read again, or a later one: nothing to write
        self._pending.extend(facts)  # sent by ``flush``, before the batch's rows are written
        if not facts and kind == "sent":
            return None
        now = self.context.clock.now().timestamp()
        keep = self.context.retention.keep_until(now)
        if state.get("d") is not None:
            # Past the 7 days in which a response counts, so that a late or repeated one is
            # told apart (and refused) rather than taken for a first.
            keep = max(keep, now + self.context.settings.keep_sent_metrics_seconds)
        state["e"] = keep
        return state
