"""An agent that fails mid-event exits before the event is acknowledged, and the event is
read again: a tracker error must not mean a deadline never kept and a fallback never sent."""

from __future__ import annotations

from typing import Any

import pytest

from appfirst.topics.models import Fallback

from .factories import app_user, practice, request

pytestmark = pytest.mark.integration


@pytest.mark.slow(20)
async def test_a_tracker_failure_is_read_again_not_lost(stack_factory: Any) -> None:
    stack = stack_factory(
        APPFIRST_FALLBACK_INDIVIDUAL_SECONDS="3",
        # The tracker raises on the first event this worker's data directory sees (its
        # first dispatch): a bug, for real, in a worker process.
        APPFIRST_FAULT_ONCE="track",
    )
    await stack.publish("practice-settings", "A00001", practice("A00001"))
    await stack.start_worker()
    req = request("crash-only-1")
    await stack.publish_eligibility([app_user(req.patient.nhs_number)])
    await stack.publish("send-requests", req.message_id, req)

    records = await stack.read(
        ["fallbacks"], lambda rs: any(t == "fallbacks" for t, _ in rs), timeout=90
    )
    assert stack.self_exits >= 1, "the worker exited crash-only (code 70) and was restarted"
    assert "injected fault at track" in stack.logs()
    # Room for a second fallback to show itself: there must be none.
    records = await stack.read(["fallbacks"], lambda rs: len(rs) > 1, timeout=5)
    fallbacks = [e for _, e in records if isinstance(e, Fallback)]
    assert [f.message_id for f in fallbacks] == ["crash-only-1"]
    assert fallbacks[0].reason == "unread"
