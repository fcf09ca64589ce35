"""The send path's pure decisions: lanes, priorities, ledger rows, give-up, limit shares."""

from __future__ import annotations

import pytest

from appfirst.rules import sending as rules
from appfirst.rules.sending import GiveUp, Next


def test_nhs_app_and_notify_are_separate_lanes() -> None:
    assert rules.lane("nhs_app") == "nhs_app"
    assert rules.lane("sms") == rules.lane("email") == "notify"


def test_fallbacks_before_individual_before_batch() -> None:
    fallback = rules.priority("fallback", "batch")
    individual = rules.priority("dispatch", "individual")
    batch = rules.priority("dispatch", "batch")
    assert fallback < individual < batch


@pytest.mark.parametrize(
    ("row", "lane", "step"),
    [
        (None, "notify", Next.SEND),
        (None, "nhs_app", Next.SEND),
        ({"provider_id": "n-1"}, "notify", Next.ABSORB),
        ({"provider_id": None}, "nhs_app", Next.ABSORB),  # providers off
        ({"rejected": 400}, "notify", Next.ABSORB),
        ({"unconfirmed": True}, "nhs_app", Next.ABSORB),
        ({"given_up": "timeout"}, "nhs_app", Next.ABSORB),
        ({"attempt": 100.0}, "notify", Next.LOOKUP),
        ({"attempt": 100.0}, "nhs_app", Next.UNCONFIRMED),
        ({"tried": 100.0}, "notify", Next.SEND),
        ({"tried": 100.0}, "nhs_app", Next.SEND),
        ({"unconfirmed": True, "attempt": 100.0}, "nhs_app", Next.ABSORB),
    ],
)
def test_next_step_from_ledger_row(row: dict[str, object] | None, lane: str, step: Next) -> None:
    assert rules.next_step(row, lane) is step  # type: ignore[arg-type]


def test_first_tried_survives_either_row() -> None:
    assert rules.first_tried(None) is None
    assert rules.first_tried({"attempt": 5.0}) == 5.0
    assert rules.first_tried({"tried": 7.0}) == 7.0
    assert rules.first_tried({"provider_id": "x"}) is None


def _due(policy: GiveUp, **kw: float | None) -> str | None:
    args: dict[str, float | None] = {
        "now": 1000.0,
        "first_attempt": None,
        "failing_since": None,
        "misconfigured_since": None,
        "last_probe": None,
    }
    args.update(kw)
    return policy.due(**args)  # type: ignore[arg-type]


def test_give_up_after_its_own_time() -> None:
    policy = GiveUp(after_seconds=300)
    assert _due(policy) is None
    assert _due(policy, first_attempt=701.0) is None
    assert _due(policy, first_attempt=700.0) == "timeout"


def test_give_up_at_once_behind_a_long_outage() -> None:
    policy = GiveUp(after_seconds=300)
    assert _due(policy, failing_since=800.0) is None
    assert _due(policy, failing_since=700.0) == "outage"  # never tried itself


def test_misconfigured_gives_up_at_once_but_probes_again() -> None:
    policy = GiveUp(after_seconds=300, config_probe_seconds=30)
    assert _due(policy, misconfigured_since=990.0, last_probe=990.0) == "configuration"
    # A probe is due: this message tries, and finds whether the fault is fixed.
    assert _due(policy, misconfigured_since=900.0, last_probe=960.0) is None


@pytest.mark.parametrize(
    ("owned", "total", "expected"), [(2, 4, 0.5), (4, 4, 1.0), (0, 4, 0.0), (1, 0, 1.0)]
)
def test_share_of_a_limit_follows_partitions(owned: int, total: int, expected: float) -> None:
    assert rules.share(owned, total) == expected


def test_shares_of_a_group_add_up_to_the_limit() -> None:
    total = 12
    for split in ([12], [6, 6], [5, 4, 3], [1] * 12):
        assert sum(rules.share(n, total) for n in split) == pytest.approx(1.0)
