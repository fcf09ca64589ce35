"""Streaming sufficient statistics of the pilot, by arm and message type.

The metrics agent turns each message's life into *facts* (sent, read, fallback, responded,
each with its delay from dispatch) and folds them into ``ArmStats``, one per arm and message
type. The contract's maturity rule: a message counts for horizon ``h`` only once ``h`` has
fully elapsed since its dispatch, so counts are kept in time buckets of dispatch time and a
bucket joins horizon ``h`` once its end plus ``h`` has passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

FactKind = Literal["sent", "read", "fallback", "responded"]
COUNTED: tuple[FactKind, ...] = ("read", "fallback", "responded")


@dataclass(frozen=True)
class Fact:
    kind: FactKind
    arm: str
    message_type: str
    dispatched_at: float  # epoch seconds
    delay: float = 0.0  # seconds from dispatch to the fact
    ods_code: str = "-"  # the practice: the unit the pilot randomised

    def aggregate_key(self) -> str:
        """Counts are kept per arm, message type and practice (``all`` is their sum)."""
        return f"{self.arm}|{self.message_type}|{self.ods_code}"


def bucket_width(horizons: tuple[int, ...]) -> int:
    """Seconds per bucket: fine enough that the shortest horizon is resolved to 1/60."""
    return max(1, min(horizons) // 60)


@dataclass
class Counts:
    sent: int = 0
    read: int = 0
    fallbacks: int = 0
    responded: int = 0

    @property
    def response_rate(self) -> float | None:
        return self.responded / self.sent if self.sent else None


@dataclass
class ArmStats:
    """Counts of one arm and message type; JSON-able for a Faust table."""

    horizons: tuple[int, ...]
    width: int
    # bucket start -> {"s": sent, "read"/"fallback"/"responded": {horizon: count}}
    buckets: dict[int, dict[str, Any]] = field(default_factory=dict)
    # horizon -> counts of buckets folded away for good (older than every horizon + grace)
    folded: dict[int, Counts] = field(default_factory=dict)
    # bucket starts below this line have been folded
    line: int = 0

    @classmethod
    def new(cls, horizons: tuple[int, ...]) -> ArmStats:
        return cls(horizons, bucket_width(horizons))

    def add(self, fact: Fact) -> None:
        start = int(fact.dispatched_at // self.width * self.width)
        if start < self.line:
            return  # older than anything still open: it can change no horizon
        bucket = self.buckets.setdefault(start, {"s": 0})
        if fact.kind == "sent":
            bucket["s"] += 1
            return
        per_h = bucket.setdefault(fact.kind, {})
        for h in self.horizons:
            if fact.delay <= h:
                per_h[str(h)] = per_h.get(str(h), 0) + 1

    def fold(self, now: float) -> None:
        """Fold buckets no fact can change any more (kept for twice the longest horizon)."""
        line = now - 2 * max(self.horizons)
        for start in sorted(s for s in self.buckets if s + self.width <= line):
            bucket = self.buckets.pop(start)
            for h in self.horizons:
                self._accumulate(self.folded.setdefault(h, Counts()), bucket, h)
            self.line = max(self.line, start + self.width)

    def snapshot(self, now: float) -> dict[int, Counts]:
        result: dict[int, Counts] = {}
        for h in self.horizons:
            base = self.folded.get(h, Counts())
            counts = Counts(base.sent, base.read, base.fallbacks, base.responded)
            for start, bucket in self.buckets.items():
                if start + self.width + h <= now:
                    self._accumulate(counts, bucket, h)
            result[h] = counts
        return result

    @staticmethod
    def _accumulate(counts: Counts, bucket: dict[str, Any], h: int) -> None:
        counts.sent += bucket.get("s", 0)
        counts.read += bucket.get("read", {}).get(str(h), 0)
        counts.fallbacks += bucket.get("fallback", {}).get(str(h), 0)
        counts.responded += bucket.get("responded", {}).get(str(h), 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "horizons": list(self.horizons),
            "width": self.width,
            "line": self.line,
            "buckets": {str(k): v for k, v in self.buckets.items()},
            "folded": {str(h): vars(c) for h, c in self.folded.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], horizons: tuple[int, ...]) -> ArmStats:
        if tuple(data["horizons"]) != horizons:
            # Horizons changed between runs: start the open buckets afresh, keep nothing
            # that would be counted under the wrong horizon.
            return cls.new(horizons)
        stats = cls(horizons, int(data["width"]))
        stats.buckets = {int(k): v for k, v in data["buckets"].items()}
        stats.folded = {int(h): Counts(**c) for h, c in data["folded"].items()}
        stats.line = int(data.get("line", 0))
        return stats


def epoch(ts: datetime) -> float:
    return ts.astimezone(UTC).timestamp()


LONDON = ZoneInfo("Europe/London")
DAY = 86400


def london_day_timestamp(at: float) -> float:
    """``at`` moved by London's UTC offset, so that a day-long window aligned to the epoch
    (as Faust aligns tumbling windows) is a London calendar day: practices count days as
    their patients do, and a message sent at 00:30 BST belongs to that day, not the last."""
    offset = datetime.fromtimestamp(at, LONDON).utcoffset() or timedelta()
    return at + offset.total_seconds()


def window_day(window_start: float) -> date:
    """The London date of a day window opened at ``london_day_timestamp`` time."""
    return datetime.fromtimestamp(window_start, UTC).date()


TREND_KINDS: tuple[FactKind, ...] = ("sent", "read", "fallback", "responded")


def london_date(at: float) -> date:
    """The London calendar day of ``at``: the day a trend counts a message's facts on."""
    return window_day(london_day_timestamp(at) // DAY * DAY)


def count_day(days: dict[str, list[int]], fact: Fact) -> None:
    """Count ``fact`` on its message's London day of dispatch (a read or a response
    counts on the day its message went out): date -> [sent, read, fallbacks, responded]."""
    row = days.setdefault(london_date(fact.dispatched_at).isoformat(), [0] * len(TREND_KINDS))
    row[TREND_KINDS.index(fact.kind)] += 1


def kept_days(days: dict[str, list[int]], now: float, keep: int) -> dict[str, list[int]]:
    """The days a trend still reports at ``now``: those of the last ``keep`` days' windows
    (a day stays while its window started after ``keep`` days before now, London time)."""
    oldest = london_day_timestamp(now) - keep * DAY
    # Windows start on whole days: the first one kept, as an ISO date that sorts as text.
    first = window_day(math.ceil(oldest / DAY) * DAY).isoformat()
    return {d: row for d, row in days.items() if d >= first}


RESPONSE_WINDOW_SECONDS = 7 * 86400  # "the patient has up to 7 days to respond"


def refused_response(state: dict[str, Any], at: float) -> str | None:
    """Why a response is not counted, or None: each message's link is single use, and a
    response comes at most 7 days after the message was sent (patient responses page).
    A response read before its dispatch (two topics, no order between them) cannot be
    judged yet: ``message_facts`` leaves it uncounted if the dispatch shows it late."""
    if "responded" in state:
        if state["responded"] == at:
            return None  # the same response read again (at-least-once): counted once anyway
        return "repeated: the message already has a response (its link is single use)"
    dispatch = state.get("d")
    if dispatch is not None and at - dispatch[2] > RESPONSE_WINDOW_SECONDS:
        return "late: more than 7 days after the message was sent"
    return None


Observation = Literal["sent", "seen", "read", "fallback", "responded"]


def message_facts(
    state: dict[str, Any], kind: Observation, at: float, sent_as: tuple[str, ...] | None = None
) -> list[Fact]:
    """Update one message's record (in place) with an observation; return the new facts.

    ``sent_as`` is (arm, message_type, ods_code) for a dispatch. ``state`` holds
    ``"d": [arm, message_type, dispatched_at, ods_code]`` once the dispatch is seen,
    ``"v"``: when the patient could first see the message (its provider accepted it,
    ``seen``), and the time of the first read, fallback and response. Each fact is produced
    once, whatever the order and however often the observations arrive.

    A fact's delay counts from ``v`` when it is known, else from the dispatch: a send
    backlog between routing and the provider is then not taken for a slow patient. A fact
    made before its ``seen`` arrived keeps its delay from the dispatch, which is never
    shorter: a rate is never overstated. Facts are bucketed by dispatch time, as before.
    """
    if kind == "seen":
        if state.get("v") is None or at < state["v"]:
            state["v"] = at
        return []
    if kind == "sent":
        if state.get("d") is not None or sent_as is None:
            return []
        arm, message_type = sent_as[0], sent_as[1]
        ods = sent_as[2] if len(sent_as) > 2 else "-"
        state["d"] = [arm, message_type, at, ods]
        start = _start(state)
        facts = [Fact("sent", arm, message_type, at, 0.0, ods)]
        for early in COUNTED:  # observations that came before their dispatch count now
            if early in state:
                if early == "responded" and state[early] - at > RESPONSE_WINDOW_SECONDS:
                    continue  # read before its dispatch, but late all the same: not counted
                facts.append(Fact(early, arm, message_type, at, _delay(state[early], start), ods))
        return facts
    if kind in state:
        return []  # the first read, fallback or response is the one that counts
    state[kind] = at
    if state.get("d") is None:
        return []
    arm, message_type, sent_at, ods = state["d"]
    if kind == "responded" and at - sent_at > RESPONSE_WINDOW_SECONDS:
        return []  # late: never counted (the agent sends it to dead-letter)
    return [Fact(kind, arm, message_type, sent_at, _delay(at, _start(state)), ods)]


def _start(state: dict[str, Any]) -> float:
    """Where a message's clock starts: when it could first be seen, never before dispatch."""
    sent_at = float(state["d"][2])
    seen = state.get("v")
    return sent_at if seen is None else max(sent_at, float(seen))


def _delay(at: float, start: float) -> float:
    return max(0.0, at - start)  # hosts' clocks differ a little: never a negative delay


def sum_types(by_type: dict[str, Any]) -> dict[str, Any]:
    """The ``all`` collector's entries (arm|ods|type) summed into one per practice (arm|ods),
    period by period (horizons or days), count by count."""
    summed: dict[str, Any] = {}
    for key, by_period in by_type.items():
        practice = summed.setdefault(key.rsplit("|", 1)[0], {})  # arm|ods, whatever ods holds
        for period, row in by_period.items():
            total = practice.setdefault(period, [0] * len(row))
            for i, n in enumerate(row):
                total[i] += n
    return summed
