"""Patient responses as the patient responses page allows them: within 7 days, once per
message, at most 5 files of at most 7 MB, of the accepted types."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from appfirst.errors import DecodeError
from appfirst.providers.callbacks import parse_response
from appfirst.rules.pilot import RESPONSE_WINDOW_SECONDS, message_facts, refused_response

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC).timestamp()


def sent() -> dict[str, object]:
    state: dict[str, object] = {}
    message_facts(state, "sent", T0, ("treatment", "sms_with_response", "A81001"))
    return state


def test_a_response_within_7_days_counts() -> None:
    assert refused_response(sent(), T0 + RESPONSE_WINDOW_SECONDS) is None


def test_a_late_response_is_refused() -> None:
    assert refused_response(sent(), T0 + RESPONSE_WINDOW_SECONDS + 1) == (
        "late: more than 7 days after the message was sent"
    )


def test_a_second_response_is_refused_but_the_same_one_read_again_is_not() -> None:
    state = sent()
    message_facts(state, "responded", T0 + 60)
    assert refused_response(state, T0 + 60) is None  # a re-read: counted once anyway
    assert message_facts(state, "responded", T0 + 60) == []
    assert "single use" in (refused_response(state, T0 + 120) or "")


def test_a_response_before_its_dispatch_is_not_judged_late() -> None:
    assert refused_response({}, T0) is None


def body(**fields: object) -> dict[str, object]:
    return {"message_id": "m-1", "responded_at": "2026-12-02T10:00:00Z", **fields}


def files(*names_sizes: tuple[str, int]) -> list[dict[str, object]]:
    return [{"name": n, "size_bytes": s} for n, s in names_sizes]


def test_accepted_files() -> None:
    ok = parse_response(
        body(
            files=files(
                *[(f"f{i}.{t}", 1000) for i, t in enumerate(["jpg", "PNG", "pdf", "docx", "gif"])]
            )
        )
    )
    assert len(ok.files) == 5
    assert parse_response(body(files=files(("scan.pdf", 7 * 1024 * 1024)))).files[0].size_bytes


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"files": files(*[(f"f{i}.jpg", 1) for i in range(6)])}, "at most 5"),
        ({"attachments": 6}, "less than or equal to 5"),
        ({"files": files(("big.pdf", 7 * 1024 * 1024 + 1))}, "over 7 MB"),
        ({"files": files(("run.exe", 10))}, "'exe' is not accepted"),
        ({"files": files(("noextension", 10))}, "is not accepted"),
        ({"attachments": 3, "files": files(("a.jpg", 1))}, "attachments says 3"),
        ({"responded_at": "yesterday"}, "responded_at"),
    ],
)
def test_malformed_responses_say_why(fields: dict[str, object], says: str) -> None:
    with pytest.raises(DecodeError) as caught:
        parse_response(body(**fields))
    assert says in caught.value.reason


def test_a_late_response_read_before_its_dispatch_is_not_counted_either() -> None:
    state: dict[str, object] = {}
    assert message_facts(state, "responded", T0 + RESPONSE_WINDOW_SECONDS + 60) == []
    facts = message_facts(state, "sent", T0, ("treatment", "sms", "A81001"))
    assert [f.kind for f in facts] == ["sent"]
