"""The fallback state machine of one NHS App message (rules/fallback.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import reduce
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appfirst.rules.fallback import (
    FALLBACK_FIELDS,
    TrackState,
    due,
    due_at,
    on_accepted,
    on_delivery,
    on_dispatch,
    on_fallback_emitted,
    on_read,
    owed,
    pending,
    with_end,
)
from appfirst.rules.routing import Deadlines
from appfirst.topics.models import DeliveryReceipt, Dispatch

T0 = datetime(2025, 3, 4, 9, 0, 0, tzinfo=UTC)
D = 3600.0
WAIT = 5400.0  # how long a live send may go unheard of before its deadline starts anyway
MID = "msg-42"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_dispatch(
    channel: str = "nhs_app",
    dispatched_at: datetime = T0,
    origin: str = "individual",
    message_type: str = "appointment_reminder",
) -> Dispatch:
    return Dispatch.model_validate(
        {
            "message_id": MID,
            "channel": channel,
            "reason": {
                "nhs_app": "nhs_app_enabled",
                "sms": "no_nhs_app",
                "email": "email_in_list",
                "none": "deceased",
            }[channel],
            "dispatched_at": dispatched_at,
            "ods_code": "A81001",
            "arm": "treatment",
            "origin": origin,
            "message_type": message_type,
            "fallback_due_at": dispatched_at + timedelta(seconds=D)
            if channel == "nhs_app"
            else None,
            "sms_fragments": 1 if channel == "sms" else None,
            "mobile": "+447911123456",
            "body": "hello",
        }
    )


def receipt(
    status: str, occurred_at: datetime, channel: str = "nhs_app", leg: str = "primary"
) -> DeliveryReceipt:
    return DeliveryReceipt.model_validate(
        {
            "message_id": MID,
            "channel": channel,
            "status": status,
            "occurred_at": occurred_at,
            "leg": leg,
        }
    )


def fresh() -> TrackState:
    return TrackState(MID, partition=3)


def dispatched(deadline: float = D, when: datetime = T0) -> TrackState:
    return on_dispatch(fresh(), make_dispatch(dispatched_at=when), deadline)


# --- due time ---------------------------------------------------------------------------


def test_nothing_owed_before_dispatch() -> None:
    state = on_delivery(fresh(), receipt("delivered", at(10)))
    assert due_at(state) is None
    assert owed(state) is None
    assert not pending(state)
    assert due(state, at(10**7)) is None


def test_due_from_dispatch_while_no_delivered_receipt() -> None:
    state = dispatched()
    assert due_at(state) == at(D)
    assert owed(state) == ("unread", at(D))
    assert pending(state)


def test_due_from_delivery_after_a_delivered_receipt() -> None:
    state = on_delivery(dispatched(), receipt("delivered", at(600)))
    assert due_at(state) == at(600 + D)
    assert owed(state) == ("unread", at(600 + D))


def test_delivered_receipt_before_dispatch_still_sets_the_due_time() -> None:
    state = on_delivery(fresh(), receipt("delivered", at(600)))
    state = on_dispatch(state, make_dispatch(), D)
    assert owed(state) == ("unread", at(600 + D))


def test_earliest_delivered_receipt_wins() -> None:
    state = on_delivery(dispatched(), receipt("delivered", at(900)))
    state = on_delivery(state, receipt("delivered", at(300)))
    state = on_delivery(state, receipt("delivered", at(600)))
    assert due_at(state) == at(300 + D)


# --- live sends: the deadline starts when the NHS App accepts ------------------------------


def sent(when: datetime = T0) -> TrackState:
    """Dispatched with live sends: the dispatcher will say when the NHS App accepted it."""
    return on_dispatch(fresh(), make_dispatch(dispatched_at=when), D, send_wait_seconds=WAIT)


def test_a_send_not_yet_accepted_is_owed_only_at_the_backstop() -> None:
    # Still queued in the NHS App lane: nothing is due at dispatch + D, so a backlog
    # cannot send the SMS first; a send never heard of still falls back, WAIT + D after.
    assert owed(sent()) == ("unread", at(WAIT + D))
    assert pending(sent())


def test_due_from_acceptance() -> None:
    state = on_accepted(sent(), at(900))
    assert owed(state) == ("unread", at(900 + D))


def test_acceptance_after_the_contracts_due_time_postpones_the_fallback() -> None:
    state = on_accepted(sent(), at(D + 120))  # the lane was D + 2 min behind
    assert due(state, at(D + 60)) is None
    assert owed(state) == ("unread", at(2 * D + 120))


def test_delivered_receipt_wins_over_acceptance() -> None:
    state = on_delivery(on_accepted(sent(), at(60)), receipt("delivered", at(600)))
    assert owed(state) == ("unread", at(600 + D))


def test_earliest_acceptance_counts_and_may_come_before_the_dispatch() -> None:
    early = on_accepted(on_accepted(fresh(), at(300)), at(120))
    state = on_dispatch(early, make_dispatch(), D, send_wait_seconds=WAIT)
    assert owed(state) == ("unread", at(120 + D))
    assert on_accepted(state, at(400)) == state


def test_a_failure_before_acceptance_falls_back_at_once() -> None:
    state = on_delivery(sent(), receipt("failed", at(300)))
    assert owed(state) == ("failed", at(300))


def test_a_read_before_the_acceptance_deadline_cancels() -> None:
    state = on_read(on_accepted(sent(), at(D + 120)), at(D + 600))
    assert owed(state) is None


def test_without_live_sends_the_deadline_starts_at_dispatch() -> None:
    # Replay and APPFIRST_PROVIDERS=off: no send, so no acceptance to wait for.
    assert owed(dispatched()) == ("unread", at(D))


def test_acceptance_survives_encoding() -> None:
    state = on_accepted(sent(), at(900))
    back = TrackState.decode(state.encode())
    assert back == state
    assert owed(back) == ("unread", at(900 + D))


@settings(max_examples=200, deadline=None, database=None)
@given(lag=st.integers(min_value=0, max_value=5 * 86400), read=st.integers(0, 10 * 86400))
def test_never_an_sms_before_the_app_message(lag: int, read: int) -> None:
    """Whenever the NHS App accepts it before the message fell due (at the latest WAIT + D
    after dispatch, the backstop), the unread fallback is due D after that; and never
    earlier than WAIT + D after dispatch if the acceptance never arrives. One accepted
    after the backstop's due time changes nothing: the SMS was owed by then."""
    accepted = on_read(on_accepted(sent(), at(lag)), at(read))
    result = owed(accepted)
    if result is not None and lag < WAIT + D:
        assert result[1] >= at(lag) + timedelta(seconds=D)
    if result is not None:
        assert result[1] >= at(min(lag, WAIT) + D)
    waiting = owed(on_read(sent(), at(read)))
    if waiting is not None:
        assert waiting[1] >= at(WAIT + D)


def test_notified_is_not_delivered() -> None:
    state = on_delivery(dispatched(), receipt("notified", at(600)))
    assert state == dispatched()
    assert owed(state) == ("unread", at(D))


@pytest.mark.parametrize(
    ("origin", "message_type", "seconds"),
    [
        ("individual", "questionnaire", 3600),
        ("batch", "bp_monitoring_questionnaire", 10800),
        ("batch", "questionnaire", 86400),
    ],
    ids=["individual", "batch-bp-monitoring", "batch-other"],
)
def test_deadline_comes_from_the_dispatch(origin: str, message_type: str, seconds: int) -> None:
    deadline = Deadlines().for_message(origin, message_type)
    assert deadline == seconds
    state = on_dispatch(fresh(), make_dispatch(origin=origin, message_type=message_type), deadline)
    assert owed(state) == ("unread", at(seconds))
    state = on_delivery(state, receipt("delivered", at(120)))
    assert owed(state) == ("unread", at(120 + seconds))


def test_due_respects_now() -> None:
    state = dispatched()
    assert due(state, at(0)) is None
    assert due(state, at(D) - timedelta(milliseconds=1)) is None
    assert due(state, at(D)) == ("unread", at(D))
    assert due(state, at(D + 86400)) == ("unread", at(D))


def test_due_respects_now_for_immediate_failures() -> None:
    state = on_delivery(dispatched(), receipt("failed", at(30)))
    assert due(state, at(29)) is None
    assert due(state, at(30)) == ("failed", at(30))


# --- reads ------------------------------------------------------------------------------


def test_read_before_dispatch_arrives_cancels() -> None:
    state = on_read(fresh(), at(100))
    state = on_dispatch(state, make_dispatch(), D)
    assert owed(state) is None
    assert not pending(state)
    assert due(state, at(10**7)) is None


def test_read_between_dispatch_and_delivery_cancels() -> None:
    state = on_read(dispatched(), at(100))
    state = on_delivery(state, receipt("delivered", at(50)))
    assert owed(state) is None


def test_read_after_delivery_cancels() -> None:
    state = on_delivery(dispatched(), receipt("delivered", at(50)))
    state = on_read(state, at(100))
    assert owed(state) is None


def test_read_after_dispatch_deadline_but_before_delivery_deadline_cancels() -> None:
    # Delivered late: the due time moves to delivery + D, and the read comes before it.
    state = on_read(dispatched(), at(D + 60))
    state = on_delivery(state, receipt("delivered", at(D - 60)))
    assert owed(state) is None


def test_read_just_before_due_cancels() -> None:
    state = on_read(dispatched(), at(D) - timedelta(milliseconds=1))
    assert owed(state) is None


@pytest.mark.parametrize("late", [0, 1, 3600], ids=["at-due", "1s-after", "1h-after"])
def test_read_at_or_after_due_does_not_cancel(late: int) -> None:
    state = on_read(dispatched(), at(D + late))
    assert owed(state) == ("unread", at(D))
    assert due(state, at(D)) == ("unread", at(D))


def test_earliest_read_wins() -> None:
    state = on_read(dispatched(), at(D + 100))
    state = on_read(state, at(100))
    state = on_read(state, at(D + 200))
    assert owed(state) is None


# --- immediate failures -----------------------------------------------------------------


@pytest.mark.parametrize("status", ["unnotified", "rejected", "failed"])
def test_failure_is_owed_at_once_with_its_reason(status: str) -> None:
    state = on_delivery(dispatched(), receipt(status, at(5)))
    assert owed(state) == (status, at(5))
    assert due(state, at(5)) == (status, at(5))


@pytest.mark.parametrize("status", ["unnotified", "rejected", "failed"])
def test_failure_after_delivery_is_still_owed_at_once(status: str) -> None:
    state = on_delivery(dispatched(), receipt("delivered", at(5)))
    state = on_delivery(state, receipt(status, at(20)))
    assert owed(state) == (status, at(20))


@pytest.mark.parametrize("status", ["unnotified", "rejected", "failed"])
def test_failure_before_dispatch_is_owed_once_dispatched(status: str) -> None:
    state = on_delivery(fresh(), receipt(status, at(5)))
    assert owed(state) is None
    state = on_dispatch(state, make_dispatch(), D)
    assert owed(state) == (status, at(5))


def test_read_after_failure_does_not_cancel() -> None:
    state = on_delivery(dispatched(), receipt("unnotified", at(5)))
    state = on_read(state, at(10))
    assert owed(state) == ("unnotified", at(5))


def test_read_before_failure_cancels() -> None:
    state = on_read(dispatched(), at(3))
    state = on_delivery(state, receipt("rejected", at(5)))
    assert owed(state) is None


@pytest.mark.parametrize(
    "failures",
    [
        [("unnotified", 10), ("failed", 100)],
        [("rejected", 10), ("failed", 100)],
        [("unnotified", 10), ("rejected", 100)],
    ],
    ids=["unnotified-then-failed", "rejected-then-failed", "unnotified-then-rejected"],
)
def test_two_failures_give_the_same_fallback_in_either_arrival_order(
    failures: list[tuple[str, int]],
) -> None:
    # "A read receipt before the due time cancels the fallback, whatever order the receipts
    # and the dispatch arrive in": here the read (t=50) is after the first failure (t=10),
    # so the fallback is owed from t=10 whichever failure receipt arrives first.
    base = on_read(dispatched(), at(50))
    in_order = reduce(lambda s, f: on_delivery(s, receipt(f[0], at(f[1]))), failures, base)
    reversed_ = reduce(
        lambda s, f: on_delivery(s, receipt(f[0], at(f[1]))), reversed(failures), base
    )
    first_status, first_at = failures[0]
    assert owed(in_order) == (first_status, at(first_at))
    assert owed(reversed_) == owed(in_order)


# --- what is ignored --------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["email", "sms", "none"])
def test_non_nhs_app_dispatches_are_ignored(channel: str) -> None:
    state = on_dispatch(fresh(), make_dispatch(channel=channel), D)
    assert state == fresh()
    assert owed(state) is None
    assert due(state, at(10**7)) is None


@pytest.mark.parametrize(
    ("status", "channel", "leg"),
    [
        ("delivered", "sms", "primary"),
        ("permanent_failure", "sms", "primary"),
        ("technical_failure", "email", "primary"),
        ("delivered", "email", "primary"),
        ("delivered", "nhs_app", "fallback"),
        ("failed", "nhs_app", "fallback"),
        ("rejected", "nhs_app", "fallback"),
        ("delivered", "sms", "fallback"),
        ("permanent_failure", "sms", "fallback"),
    ],
    ids=lambda v: str(v),
)
def test_receipts_of_other_channels_or_the_fallback_leg_are_ignored(
    status: str, channel: str, leg: str
) -> None:
    before = dispatched()
    after = on_delivery(before, receipt(status, at(60), channel=channel, leg=leg))
    assert after == before
    assert owed(after) == ("unread", at(D))


@pytest.mark.parametrize(
    "status", ["permanent_failure", "temporary_failure", "technical_failure", "notified"]
)
def test_nhs_app_receipts_with_non_app_statuses_change_nothing(status: str) -> None:
    before = dispatched()
    assert on_delivery(before, receipt(status, at(60))) == before


# --- at most one fallback ---------------------------------------------------------------


def test_never_owed_again_once_emitted() -> None:
    state = on_fallback_emitted(dispatched(), "unread")
    assert state.fallback_emitted and state.fallback_reason == "unread"
    assert owed(state) is None
    assert due(state, at(10**7)) is None
    # Nothing that arrives later revives it.
    state = on_delivery(state, receipt("delivered", at(D + 10)))
    state = on_delivery(state, receipt("failed", at(D + 20)))
    state = on_dispatch(state, make_dispatch(dispatched_at=at(D + 30)), D)
    assert owed(state) is None
    assert not pending(state)


def test_emitted_seen_before_dispatch_is_never_owed() -> None:
    state = on_fallback_emitted(fresh(), "failed")
    state = on_dispatch(state, make_dispatch(), D)
    state = on_delivery(state, receipt("failed", at(5)))
    assert owed(state) is None


def test_second_dispatch_is_ignored() -> None:
    first = dispatched()
    again = on_dispatch(first, make_dispatch(dispatched_at=at(500)), 86400)
    assert again == first


def test_duplicated_events_are_idempotent() -> None:
    events = [
        lambda s: on_dispatch(s, make_dispatch(), D),
        lambda s: on_delivery(s, receipt("delivered", at(60))),
        lambda s: on_delivery(s, receipt("unnotified", at(70))),
        lambda s: on_read(s, at(D + 500)),
        lambda s: on_fallback_emitted(s, "unnotified"),
    ]
    state = fresh()
    for event in events:
        once = event(state)
        assert event(once) == once
        state = once


# --- persistence ------------------------------------------------------------------------


def _roundtrip(state: TrackState) -> TrackState:
    return TrackState.from_json(json.loads(json.dumps(state.to_json())))


@pytest.mark.parametrize(
    "build",
    [
        lambda: fresh(),
        lambda: dispatched(),
        lambda: on_read(on_delivery(dispatched(), receipt("delivered", at(60))), at(120)),
        lambda: on_delivery(dispatched(), receipt("rejected", at(61.5))),
        lambda: on_fallback_emitted(
            on_delivery(dispatched(when=at(0.123)), receipt("failed", at(1))), "failed"
        ),
    ],
    ids=["fresh", "dispatched", "delivered-and-read", "failed", "emitted"],
)
def test_track_state_json_round_trip(build: Any) -> None:
    state = build()
    back = _roundtrip(state)
    assert back == state
    assert owed(back) == owed(state)
    assert back.to_json() == state.to_json()


@pytest.mark.parametrize(
    "build",
    [
        lambda: fresh(),
        lambda: dispatched(),
        lambda: on_accepted(sent(), at(0.000_123)),
        lambda: on_read(on_delivery(dispatched(), receipt("delivered", at(60))), at(120)),
        lambda: on_delivery(dispatched(), receipt("rejected", at(61.5))),
        lambda: with_end(
            on_fallback_emitted(
                on_delivery(dispatched(when=at(0.123)), receipt("failed", at(1))), "failed"
            ),
            now=1_800_000_000.5,
            keep_seconds=60,
        ),
    ],
    ids=[
        "fresh",
        "dispatched",
        "accepted-to-the-microsecond",
        "delivered-and-read",
        "failed",
        "emitted",
    ],
)
def test_a_row_part_reads_back_exactly(build: Any) -> None:
    state = build()
    part = json.loads(json.dumps(state.to_part()))
    back = TrackState.from_part(state.message_id, state.partition, part)
    assert back == state
    assert owed(back) == owed(state)
    assert back.to_part() == state.to_part()


def test_a_pending_row_part_is_compact() -> None:
    # Held in memory while its fallback is owed: its field names and ISO times were a third
    # of it. The mobile and body are what it must keep.
    state = on_accepted(sent(), at(5))
    raw = json.dumps(state.to_part(), separators=(",", ":"))
    assert len(raw) <= len(state.encode()) // 2 + 60, raw
    assert "+447911123456" in raw and "hello" in raw


def test_track_state_json_keeps_what_the_fallback_sms_needs() -> None:
    state = dispatched()
    data = json.loads(json.dumps(state.to_json()))
    assert data["dispatch"]["mobile"] == "+447911123456"
    assert data["dispatch"]["body"] == "hello"
    assert data["deadline_seconds"] == D


def test_track_state_keeps_only_what_the_fallback_sms_needs() -> None:
    # No NHS number, email or routing detail is held for the weeks a deadline can wait.
    state = dispatched()
    assert state.dispatch is not None
    assert set(state.dispatch) == set(FALLBACK_FIELDS)
    assert b"nhs_number" not in state.encode()


def test_an_emitted_fallback_forgets_the_mobile_and_body() -> None:
    state = on_fallback_emitted(dispatched(), "unread")
    assert state.dispatch is None
    assert owed(state) is None
    assert b"+447911123456" not in state.encode()


def test_encoded_state_is_compact_and_reads_back() -> None:
    state = on_read(on_delivery(dispatched(), receipt("delivered", at(60))), at(120))
    raw = state.encode()
    assert TrackState.decode(raw) == state
    assert b" " not in raw.replace(b"hello", b"")  # no padding between separators
    assert len(raw) < 400, raw


def test_state_written_by_the_earlier_layout_still_decodes() -> None:
    # Before the compact layout the table held a dict with every field and the whole
    # dispatch; a changelog from then must recover into the same deadline.
    state = dispatched()
    earlier = {
        "message_id": MID,
        "partition": 3,
        "deadline_seconds": D,
        "dispatched_at": T0.isoformat(),
        "delivered_at": None,
        "read_at": None,
        "failure": None,
        "failed_at": None,
        "fallback_emitted": False,
        "fallback_reason": None,
        "dispatch": make_dispatch(dispatched_at=T0).model_dump(mode="json"),
    }
    back = TrackState.decode(json.dumps(earlier).encode())
    assert owed(back) == owed(state)
    assert back.dispatch is not None and back.dispatch["mobile"] == "+447911123456"


# --- order independence -----------------------------------------------------------------

OFFSETS = st.integers(min_value=-600, max_value=3 * 86400)


def _apply(state: TrackState, event: tuple[Any, ...]) -> TrackState:
    kind = event[0]
    if kind == "dispatch":
        d = make_dispatch(channel=event[2], dispatched_at=at(event[1]))
        return on_dispatch(state, d, D, send_wait_seconds=WAIT if event[3] else None)
    if kind == "read":
        return on_read(state, at(event[1]))
    if kind == "accepted":
        return on_accepted(state, at(event[1]))
    return on_delivery(state, receipt(kind, at(event[1]), channel=event[2], leg=event[3]))


@st.composite
def event_sets(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    dispatch_at = draw(st.integers(min_value=0, max_value=600))
    events: list[tuple[Any, ...]] = [("dispatch", dispatch_at, "nhs_app", draw(st.booleans()))]
    for _ in range(draw(st.integers(0, 2))):
        events.append(("accepted", dispatch_at + draw(st.integers(0, 2 * 86400))))
    for _ in range(draw(st.integers(0, 3))):
        events.append(("delivered", dispatch_at + draw(OFFSETS), "nhs_app", "primary"))
    for _ in range(draw(st.integers(0, 3))):
        events.append(("read", dispatch_at + draw(OFFSETS)))
    # Noise the state machine must ignore wherever it comes.
    if draw(st.booleans()):
        events.append(("delivered", dispatch_at + draw(OFFSETS), "nhs_app", "fallback"))
    if draw(st.booleans()):
        events.append(("failed", dispatch_at + draw(OFFSETS), "nhs_app", "fallback"))
    if draw(st.booleans()):
        events.append(("delivered", dispatch_at + draw(OFFSETS), "sms", "primary"))
    if draw(st.booleans()):
        events.append(("notified", dispatch_at + draw(OFFSETS), "nhs_app", "primary"))
    return events


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.data(), events=event_sets())
def test_owed_is_independent_of_arrival_order(data: st.DataObject, events: list[Any]) -> None:
    reference = reduce(_apply, events, fresh())
    shuffled = data.draw(st.permutations(events))
    result = reduce(_apply, shuffled, fresh())
    assert owed(result) == owed(reference)
    assert result == reference


@settings(max_examples=200, deadline=None, database=None)
@given(
    data=st.data(),
    events=event_sets(),
    failure=st.tuples(st.sampled_from(["unnotified", "rejected", "failed"]), OFFSETS),
)
def test_owed_with_one_failure_is_independent_of_arrival_order(
    data: st.DataObject, events: list[Any], failure: tuple[str, int]
) -> None:
    status, offset = failure
    events = [*events, (status, offset, "nhs_app", "primary")]
    reference = reduce(_apply, events, fresh())
    shuffled = data.draw(st.permutations(events))
    assert owed(reduce(_apply, shuffled, fresh())) == owed(reference)


KEEP = 100.0


def test_a_row_owed_a_fallback_has_no_end() -> None:
    assert with_end(dispatched(), 0.0, KEEP).ends_at is None


def test_a_settled_row_ends_the_keep_window_after_it_settled() -> None:
    read = with_end(on_read(dispatched(), at(10)), 50.0, KEEP)
    assert read.ends_at == 150.0
    # A later receipt of a settled message does not move its end.
    later = with_end(on_delivery(read, receipt("delivered", at(5))), 90.0, KEEP)
    assert later.ends_at == 150.0
    emitted = with_end(on_fallback_emitted(dispatched(), "unread"), 7.0, KEEP)
    assert emitted.ends_at == 107.0


def test_a_row_owed_again_loses_its_end() -> None:
    """A failure receipt that came first: nothing owed until its dispatch is read, which
    makes the fallback owed, so the row is pending again."""
    early = with_end(on_delivery(fresh(), receipt("unnotified", at(1))), 0.0, KEEP)
    assert early.ends_at == KEEP
    owing = with_end(on_dispatch(early, make_dispatch(), D), 5.0, KEEP)
    assert owed(owing) == ("unnotified", at(1))
    assert owing.ends_at is None


def test_the_end_survives_the_tables_encoding() -> None:
    state = with_end(on_read(dispatched(), at(10)), 50.0, KEEP)
    assert TrackState.decode(state.encode()) == state


def test_a_delivery_after_the_message_fell_due_does_not_move_the_due_time() -> None:
    # "while no delivered receipt has come": at D nothing had been delivered, so the
    # fallback was owed then, whenever the receipt is read.
    state = on_delivery(dispatched(), receipt("delivered", at(D + 100)))
    assert owed(state) == ("unread", at(D))


def test_a_delivery_before_the_message_fell_due_moves_the_due_time() -> None:
    state = on_delivery(dispatched(), receipt("delivered", at(D - 1)))
    assert owed(state) == ("unread", at(2 * D - 1))


def test_a_failure_after_the_message_fell_due_unread_changes_nothing() -> None:
    state = on_delivery(dispatched(), receipt("failed", at(D + 50)))
    assert owed(state) == ("unread", at(D))
    # Read after it fell due and before the failure: still owed, for being unread.
    assert owed(on_read(state, at(D + 10))) == ("unread", at(D))


_KINDS = ("delivered", "unnotified", "failed", "read", "accepted")


@settings(max_examples=1000, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(_KINDS), st.integers(min_value=-600, max_value=int(WAIT + 2 * D))
        ),
        max_size=5,
    ),
    limit=st.integers(min_value=0, max_value=int(WAIT + 2 * D)),
    live=st.booleans(),
)
def test_what_the_sweep_acts_on_is_never_changed_by_later_events(
    events: list[tuple[str, int]], limit: int, live: bool
) -> None:
    # The sweep acts at ``limit`` on what has been read of events up to then (replay: the
    # watermark of every input). An event that happens after the limit must not change a
    # fallback that was due by then: otherwise where a replay's batches fall would decide
    # what it sends.
    def apply(state: TrackState, event: tuple[str, int]) -> TrackState:
        kind, seconds = event
        if kind == "read":
            return on_read(state, at(seconds))
        if kind == "accepted":
            return on_accepted(state, at(seconds))
        return on_delivery(state, receipt(kind, at(seconds)))

    start = sent() if live else dispatched()  # live sends: the acceptance backstop too
    seen = reduce(apply, [e for e in events if e[1] <= limit], start)
    acted = owed(seen)
    if acted is not None and acted[1] <= at(limit):
        assert owed(reduce(apply, events, start)) == acted


def test_an_acceptance_after_the_backstop_but_before_its_due_restarts_the_hour() -> None:
    # Accepted late, while the SMS was not yet owed: the patient gets their hour with it.
    assert owed(on_accepted(sent(), at(WAIT + 60))) == ("unread", at(WAIT + 60 + D))


def test_an_acceptance_after_the_message_fell_due_at_the_backstop_changes_nothing() -> None:
    assert owed(on_accepted(sent(), at(WAIT + D + 60))) == ("unread", at(WAIT + D))
