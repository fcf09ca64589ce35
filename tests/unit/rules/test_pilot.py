"""Streaming pilot statistics (rules/pilot.py): maturity, horizons, folding, persistence."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appfirst.rules.pilot import (
    DAY,
    ArmStats,
    Counts,
    Fact,
    bucket_width,
    count_day,
    kept_days,
    london_date,
    london_day_timestamp,
    message_facts,
    sum_types,
    window_day,
)

HORIZONS = (3600, 10800, 86400, 604800)
WIDTH = 60  # min(HORIZONS) // 60
BUCKET = 1_740_000_000  # a multiple of 60: the start of a bucket
FAR = BUCKET + 100 * 604800


def fact(kind: str, dispatched_at: float = BUCKET + 10, delay: float = 0.0) -> Fact:
    return Fact(kind, "treatment", "questionnaire", dispatched_at, delay)  # type: ignore[arg-type]


def stats_with(*facts: Fact) -> ArmStats:
    stats = ArmStats.new(HORIZONS)
    for f in facts:
        stats.add(f)
    return stats


def test_bucket_width() -> None:
    assert bucket_width(HORIZONS) == WIDTH
    assert ArmStats.new(HORIZONS).width == WIDTH
    assert bucket_width((30, 100)) == 1  # never below one second
    assert bucket_width((86400,)) == 1440


# --- maturity ---------------------------------------------------------------------------


@pytest.mark.parametrize("h", HORIZONS)
def test_sent_counts_only_once_bucket_end_plus_horizon_has_passed(h: int) -> None:
    stats = stats_with(fact("sent", BUCKET + 10))
    mature_at = BUCKET + WIDTH + h
    assert stats.snapshot(mature_at - 1)[h].sent == 0
    assert stats.snapshot(mature_at)[h].sent == 1
    assert stats.snapshot(mature_at + 10**6)[h].sent == 1


def test_maturity_is_per_horizon() -> None:
    stats = stats_with(fact("sent", BUCKET))
    snap = stats.snapshot(BUCKET + WIDTH + 10800)
    assert [snap[h].sent for h in HORIZONS] == [1, 1, 0, 0]


def test_a_message_at_the_very_end_of_a_bucket_waits_for_the_bucket_end() -> None:
    stats = stats_with(fact("sent", BUCKET + WIDTH - 0.001))
    # Its own horizon has elapsed, but its bucket's has not yet: not counted (conservative).
    assert stats.snapshot(BUCKET + WIDTH - 0.001 + 3600)[3600].sent == 0
    assert stats.snapshot(BUCKET + WIDTH + 3600)[3600].sent == 1


def test_a_message_in_the_next_bucket_matures_a_bucket_later() -> None:
    stats = stats_with(fact("sent", BUCKET + WIDTH))
    assert stats.snapshot(BUCKET + WIDTH + 3600)[3600].sent == 0
    assert stats.snapshot(BUCKET + 2 * WIDTH + 3600)[3600].sent == 1


def test_immature_response_is_not_counted_either() -> None:
    stats = stats_with(fact("sent"), fact("responded", delay=10))
    snap = stats.snapshot(BUCKET + WIDTH + 3600 - 1)
    assert snap[3600] == Counts()


# --- horizons ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        (0, [1, 1, 1, 1]),
        (3600, [1, 1, 1, 1]),
        (3601, [0, 1, 1, 1]),
        (10800, [0, 1, 1, 1]),
        (10801, [0, 0, 1, 1]),
        (86400, [0, 0, 1, 1]),
        (604800, [0, 0, 0, 1]),
        (604801, [0, 0, 0, 0]),
    ],
    ids=lambda v: str(v),
)
def test_responded_counts_only_responses_within_the_horizon(
    delay: int, expected: list[int]
) -> None:
    stats = stats_with(fact("sent"), fact("responded", delay=delay))
    snap = stats.snapshot(FAR)
    assert [snap[h].responded for h in HORIZONS] == expected
    assert [snap[h].sent for h in HORIZONS] == [1, 1, 1, 1]


@pytest.mark.parametrize("kind", ["read", "fallback"])
def test_read_and_fallback_follow_the_same_horizon_rule(kind: str) -> None:
    stats = stats_with(fact("sent"), fact(kind, delay=5000))
    snap = stats.snapshot(FAR)
    got = [snap[h].read if kind == "read" else snap[h].fallbacks for h in HORIZONS]
    assert got == [0, 1, 1, 1]
    assert [snap[h].responded for h in HORIZONS] == [0, 0, 0, 0]


def test_response_rate() -> None:
    stats = stats_with(
        fact("sent"), fact("sent"), fact("sent"), fact("sent"), fact("responded", delay=100)
    )
    snap = stats.snapshot(FAR)
    assert snap[3600].response_rate == 0.25
    assert Counts().response_rate is None


def test_a_fact_is_counted_once_under_its_arm_type_and_practice() -> None:
    f = Fact("sent", "control", "bp_monitoring_questionnaire", 0.0, 0.0, "C0001")
    assert f.aggregate_key() == "control|bp_monitoring_questionnaire|C0001"
    g = Fact("read", "treatment", "sms", 0.0, 5, "T0002")
    assert g.aggregate_key() == "treatment|sms|T0002"


def test_all_is_the_sum_of_each_practices_types() -> None:
    collected = {
        "treatment|T0001|sms": {"3600": [10, 2, 0, 0], "86400": [10, 4, 0, 0]},
        "treatment|T0001|sms_with_response": {"3600": [5, 1, 3, 1]},
        "control|C0001|sms": {"3600": [7, 3, 0, 0]},
    }
    assert sum_types(collected) == {
        "treatment|T0001": {"3600": [15, 3, 3, 1], "86400": [10, 4, 0, 0]},
        "control|C0001": {"3600": [7, 3, 0, 0]},
    }
    days = {"control|C0001|sms": {"2026-11-30": [1, 0, 0, 1]}, "control|C0001|x": {}}
    assert sum_types(days) == {"control|C0001": {"2026-11-30": [1, 0, 0, 1]}}


# --- folding ----------------------------------------------------------------------------

FACT_KINDS = st.sampled_from(["sent", "sent", "read", "fallback", "responded"])
facts_strategy = st.lists(
    st.builds(
        Fact,
        kind=FACT_KINDS,
        arm=st.just("treatment"),
        message_type=st.just("questionnaire"),
        dispatched_at=st.floats(min_value=BUCKET, max_value=BUCKET + 60 * 86400),
        delay=st.floats(min_value=0, max_value=2 * 604800),
    ),
    max_size=60,
)


def _counts(snapshot: dict[int, Counts]) -> dict[int, tuple[int, int, int, int]]:
    return {h: (c.sent, c.read, c.fallbacks, c.responded) for h, c in snapshot.items()}


def test_fold_keeps_totals_identical() -> None:
    stats = stats_with(
        fact("sent", BUCKET),
        fact("responded", BUCKET, delay=100),
        fact("sent", BUCKET + 5 * 86400),
        fact("read", BUCKET + 5 * 86400, delay=20000),
        fact("fallback", BUCKET + 5 * 86400, delay=3600),
    )
    before = _counts(stats.snapshot(FAR))
    stats.fold(FAR)
    assert not stats.buckets
    assert stats.folded
    assert _counts(stats.snapshot(FAR)) == before


@settings(max_examples=200, deadline=None, database=None)
@given(
    facts=facts_strategy,
    fold_at=st.floats(min_value=BUCKET, max_value=FAR),
    look_after=st.floats(min_value=0, max_value=30 * 86400),
)
def test_fold_never_changes_a_snapshot(
    facts: list[Fact], fold_at: float, look_after: float
) -> None:
    stats = stats_with(*facts)
    now = fold_at + look_after
    before = {t: _counts(stats.snapshot(t)) for t in (fold_at, now, FAR)}
    stats.fold(fold_at)
    after = {t: _counts(stats.snapshot(t)) for t in (fold_at, now, FAR)}
    assert after == before


@settings(max_examples=100, deadline=None, database=None)
@given(facts=facts_strategy)
def test_fold_far_in_the_future_equals_unfolded_totals(facts: list[Fact]) -> None:
    stats = stats_with(*facts)
    before = _counts(stats.snapshot(FAR))
    stats.fold(FAR)
    assert _counts(stats.snapshot(FAR)) == before
    sent = sum(1 for f in facts if f.kind == "sent")
    assert all(c[0] == sent for c in before.values())


def test_facts_older_than_the_fold_line_are_dropped() -> None:
    stats = stats_with(fact("sent", BUCKET))
    stats.fold(FAR)
    assert stats.line == BUCKET + WIDTH
    stats.add(fact("sent", BUCKET + 1))
    assert _counts(stats.snapshot(FAR))[3600] == (1, 0, 0, 0)


# --- persistence ------------------------------------------------------------------------


def _roundtrip(stats: ArmStats, horizons: tuple[int, ...] = HORIZONS) -> ArmStats:
    return ArmStats.from_json(json.loads(json.dumps(stats.to_json())), horizons)


@settings(max_examples=100, deadline=None, database=None)
@given(facts=facts_strategy, fold_at=st.none() | st.floats(min_value=BUCKET, max_value=FAR))
def test_json_round_trip(facts: list[Fact], fold_at: float | None) -> None:
    stats = stats_with(*facts)
    if fold_at is not None:
        stats.fold(fold_at)
    back = _roundtrip(stats)
    assert back.to_json() == stats.to_json()
    assert back.horizons == stats.horizons
    assert back.width == stats.width
    assert back.line == stats.line
    assert back.buckets == stats.buckets
    assert back.folded == stats.folded
    for t in (BUCKET + 86400, BUCKET + 30 * 86400, FAR):
        assert _counts(back.snapshot(t)) == _counts(stats.snapshot(t))


def test_round_trip_then_continue_adding() -> None:
    stats = stats_with(fact("sent"), fact("responded", delay=10))
    back = _roundtrip(stats)
    back.add(fact("sent"))
    stats.add(fact("sent"))
    assert _counts(back.snapshot(FAR)) == _counts(stats.snapshot(FAR))
    assert _counts(back.snapshot(FAR))[3600] == (2, 0, 0, 1)


def test_from_json_with_other_horizons_starts_afresh() -> None:
    stats = stats_with(fact("sent"), fact("responded", delay=10))
    stats.fold(FAR)
    stats.add(fact("sent", FAR))
    other = (600, 7200)
    back = _roundtrip(stats, other)
    assert back.horizons == other
    assert back.width == bucket_width(other) == 10
    assert back.buckets == {}
    assert back.folded == {}
    assert back.line == 0
    assert _counts(back.snapshot(FAR * 2)) == {600: (0, 0, 0, 0), 7200: (0, 0, 0, 0)}


def test_from_json_with_reordered_horizons_starts_afresh() -> None:
    stats = stats_with(fact("sent"))
    back = _roundtrip(stats, tuple(reversed(HORIZONS)))
    assert back.buckets == {}


# --- message_facts: one message's observations into facts --------------------------------

SENT_AS = ("treatment", "questionnaire")


def test_message_facts_after_dispatch() -> None:
    state: dict[str, Any] = {}
    assert message_facts(state, "sent", 1000.0, SENT_AS) == [
        Fact("sent", "treatment", "questionnaire", 1000.0)
    ]
    assert message_facts(state, "read", 1300.0) == [
        Fact("read", "treatment", "questionnaire", 1000.0, 300.0)
    ]
    assert message_facts(state, "read", 1200.0) == []  # the first read is the one that counts
    assert message_facts(state, "sent", 5000.0, SENT_AS) == []  # a re-sent dispatch


def test_message_facts_before_dispatch_count_when_it_comes() -> None:
    state: dict[str, Any] = {}
    assert message_facts(state, "responded", 1500.0) == []
    assert message_facts(state, "fallback", 4600.0) == []
    facts = message_facts(state, "sent", 1000.0, SENT_AS)
    assert sorted(facts, key=lambda f: f.kind) == [
        Fact("fallback", "treatment", "questionnaire", 1000.0, 3600.0),
        Fact("responded", "treatment", "questionnaire", 1000.0, 500.0),
        Fact("sent", "treatment", "questionnaire", 1000.0),
    ]


def test_message_facts_sent_without_arm_and_type_records_nothing() -> None:
    state: dict[str, Any] = {}
    assert message_facts(state, "sent", 1000.0) == []
    assert state == {}


OBSERVATIONS = st.lists(
    st.tuples(
        st.sampled_from(["read", "fallback", "responded"]),
        # Within the 7 days a response is counted in (a late one: test_responses.py).
        st.floats(min_value=1000, max_value=1000 + 7 * 86400),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.data(), observations=OBSERVATIONS, resends=st.integers(0, 2))
def test_message_facts_each_fact_once_whatever_the_order(
    data: st.DataObject, observations: list[tuple[str, float]], resends: int
) -> None:
    events: list[tuple[str, float]] = [("sent", 1000.0)] * (1 + resends) + observations
    shuffled = data.draw(st.permutations(events))
    state: dict[str, Any] = {}
    facts: list[Fact] = []
    for kind, at in shuffled:
        facts.extend(message_facts(state, kind, at, SENT_AS if kind == "sent" else None))  # type: ignore[arg-type]
    kinds = sorted(f.kind for f in facts)
    assert kinds == sorted({"sent"} | {kind for kind, _ in observations})
    assert all(f.dispatched_at == 1000.0 for f in facts)
    assert all(f.arm == "treatment" and f.message_type == "questionnaire" for f in facts)


def test_delays_count_from_when_the_message_could_first_be_seen() -> None:
    # Routed at 1000, accepted by its provider at 1400 (a send backlog), answered at 1700:
    # the patient took 300 s, not 700.
    state: dict[str, Any] = {}
    message_facts(state, "sent", 1000.0, SENT_AS)
    assert message_facts(state, "seen", 1400.0) == []
    assert message_facts(state, "seen", 1450.0) == []  # the earliest outcome counts
    assert message_facts(state, "responded", 1700.0) == [
        Fact("responded", "treatment", "questionnaire", 1000.0, 300.0)
    ]


def test_seen_before_its_dispatch_is_read_still_counts() -> None:
    state: dict[str, Any] = {}
    message_facts(state, "seen", 1400.0)
    message_facts(state, "read", 1500.0)
    facts = message_facts(state, "sent", 1000.0, SENT_AS)
    assert Fact("read", "treatment", "questionnaire", 1000.0, 100.0) in facts


def test_a_fact_before_its_seen_keeps_its_delay_from_dispatch() -> None:
    # Read before the outcome arrived (two topics, no order between them): never a shorter
    # delay than the truth, so a rate is never overstated.
    state: dict[str, Any] = {}
    message_facts(state, "sent", 1000.0, SENT_AS)
    assert message_facts(state, "read", 1600.0) == [
        Fact("read", "treatment", "questionnaire", 1000.0, 600.0)
    ]
    message_facts(state, "seen", 1400.0)
    assert message_facts(state, "read", 1600.0) == []


def test_a_seen_earlier_than_dispatch_starts_at_dispatch() -> None:
    state: dict[str, Any] = {}
    message_facts(state, "sent", 1000.0, SENT_AS)
    message_facts(state, "seen", 999.0)  # another host's clock, a little behind
    assert message_facts(state, "responded", 1100.0)[0].delay == 100.0
    assert message_facts(state, "read", 990.0)[0].delay == 0.0


def test_message_facts_carry_the_practice() -> None:
    state: dict[str, Any] = {}
    sent = message_facts(state, "sent", 1000.0, ("control", "sms", "C0001"))
    assert sent == [Fact("sent", "control", "sms", 1000.0, 0.0, "C0001")]
    assert message_facts(state, "responded", 1600.0) == [
        Fact("responded", "control", "sms", 1000.0, 600.0, "C0001")
    ]


@pytest.mark.parametrize(
    ("utc", "london_date"),
    [
        ("2026-07-01T23:30:00+00:00", "2026-07-02"),  # 00:30 BST: already the next day
        ("2026-07-01T22:59:59+00:00", "2026-07-01"),
        ("2026-12-01T23:30:00+00:00", "2026-12-01"),  # GMT: London is UTC
        ("2026-03-29T00:30:00+00:00", "2026-03-29"),  # the night the clocks go forward
        ("2026-10-24T23:30:00+00:00", "2026-10-25"),  # the night they go back (still BST)
    ],
)
def test_a_trend_day_is_a_london_calendar_day(utc: str, london_date: str) -> None:
    at = datetime.fromisoformat(utc).timestamp()
    shifted = london_day_timestamp(at)
    # Faust's tumbling windows start at multiples of the size from the epoch.
    assert window_day(shifted // DAY * DAY).isoformat() == london_date


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        ("2026-07-01T23:30:00+00:00", "2026-07-02"),
        ("2026-07-01T22:59:59+00:00", "2026-07-01"),
        ("2026-12-01T23:30:00+00:00", "2026-12-01"),
        ("2026-10-24T23:30:00+00:00", "2026-10-25"),
    ],
)
def test_london_date_is_the_windowed_tables_day(utc: str, expected: str) -> None:
    at = datetime.fromisoformat(utc).timestamp()
    assert london_date(at).isoformat() == expected
    assert london_date(at) == window_day(london_day_timestamp(at) // DAY * DAY)


def test_count_day_counts_each_fact_on_its_dispatch_day() -> None:
    sent_at = datetime.fromisoformat("2026-07-01T23:30:00+00:00").timestamp()  # 2 July, BST
    days: dict[str, list[int]] = {}
    for kind, delay in (("sent", 0.0), ("read", 3600.0), ("responded", 86_400.0)):
        count_day(days, Fact(kind, "treatment", "questionnaire", sent_at, delay))  # type: ignore[arg-type]
    count_day(days, Fact("sent", "treatment", "questionnaire", sent_at - 3600))
    assert days == {"2026-07-02": [1, 1, 0, 1], "2026-07-01": [1, 0, 0, 0]}


def test_kept_days_drops_days_older_than_the_trend_keeps() -> None:
    now = datetime.fromisoformat("2026-12-10T12:00:00+00:00").timestamp()
    days = {d: [1, 0, 0, 0] for d in ("2026-12-10", "2026-12-04", "2026-12-03", "2026-11-01")}
    assert set(kept_days(days, now, keep=7)) == {"2026-12-10", "2026-12-04"}
    assert set(kept_days(days, now, keep=56)) == set(days)


def test_kept_days_keeps_the_day_whose_window_opens_exactly_at_the_cut() -> None:
    # In GMT London is UTC: 56 days before midnight of 10 December is midnight of 15 October
    # (BST then, but the cut is on the shifted clock, as Faust's windows were).
    now = datetime.fromisoformat("2026-12-10T00:00:00+00:00").timestamp()
    days = {"2026-10-15": [1, 0, 0, 0], "2026-10-14": [1, 0, 0, 0]}
    assert set(kept_days(days, now, keep=56)) == {"2026-10-15"}
