"""Batch messaging's pure parts (rules/batch.py): the CSV, the review, the schedule."""

from __future__ import annotations

import io
import itertools
from collections import Counter
from datetime import UTC, datetime

import pytest

from appfirst.rules.batch import (
    REASONS,
    BatchFileError,
    BatchPlan,
    Progress,
    Schedule,
    message_id,
    non_contactable_row,
    parse_period,
    read_rows,
    review,
)
from appfirst.rules.contact import normalise_uk_mobile
from appfirst.rules.nhs_number import check_digit
from appfirst.topics.models import PracticeSettings

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
PLAN = BatchPlan("b-test", "A81001", "sms", "Your flu jab is due. Book at the surgery.")


def nhs(n: int) -> str:
    """The n-th valid NHS number from 9000000000 up."""
    while True:
        first = f"{900000000 + n:09d}"
        digit = check_digit(first)
        if digit is not None:
            return first + str(digit)
        n += 1_000_000


def run(text: str, practice: PracticeSettings | None = None, failed: set[str] = frozenset()):  # type: ignore[no-untyped-def, assignment]
    columns, rows = read_rows(io.StringIO(text, newline=""))
    return list(
        review(
            rows,
            columns,
            PLAN,
            practice=practice,
            now=NOW,
            failed_recently=lambda e164: e164 in failed,
        )
    )


def test_headers_as_exports_spell_them_with_a_bom() -> None:
    text = "\ufeffNHS Number,Mobile Telephone,E-mail Address,Date of Birth,Surname,Forename\n"
    text += f"{nhs(1)},07911 123456,,01/02/1950,Smith,Ann\n"
    (one,) = run(text)
    assert one.reason is None
    assert one.row.name == "Ann Smith"
    assert one.row.date_of_birth == "01/02/1950"
    assert one.request is not None
    assert one.request.patient.mobile == "07911 123456"
    assert one.request.origin == "batch" and one.request.batch_id == "b-test"
    assert one.request.message_id == message_id("b-test", 0) == "b-test.000000"


def test_nhs_numbers_written_with_spaces_are_read() -> None:
    spaced = f"{nhs(2)[:3]} {nhs(2)[3:6]} {nhs(2)[6:]}"
    (one,) = run(f"nhs_number,mobile\n{spaced},07911123456\n")
    assert one.reason is None and one.row.nhs_number == nhs(2)


def test_every_reason_a_row_cannot_be_contacted() -> None:
    practice = PracticeSettings(ods_code="A81001", likely_to_fail_check=True)
    failed_number = "07911 123499"
    failed = {normalise_uk_mobile(failed_number) or ""}
    text = "NHS number,Mobile,Email,Deceased\n" + "\n".join(
        [
            f"{nhs(10)},07911123456,,",  # contactable by SMS
            f"{nhs(11)},,ann@example.org,",  # contactable by email
            "1234567890,07911123456,,",  # bad check digit
            f"{nhs(10)},07911123457,,",  # the same patient again
            f"{nhs(12)},07911123458,,Y",  # deceased
            f"{nhs(13)},,,",  # nothing to contact them by
            f"{nhs(14)},0161 496 0000,,",  # a landline
            f"{nhs(15)},+33 6 12 34 56 78,,",  # a French mobile
            f"{nhs(16)},{failed_number},,",  # failed in the last 90 days
        ]
    )
    reasons = [r.reason for r in run(text, practice, failed)]
    assert reasons == [
        None,
        None,
        "invalid_nhs_number",
        "duplicate_row",
        "deceased",
        "contact_details_not_provided",
        "not_uk_phone_number",
        "not_uk_phone_number",
        "likely_to_fail",
    ]
    # The check is the practice's choice: off, the same number is contacted.
    assert run(text, PracticeSettings(ods_code="A81001"), failed)[-1].reason is None


def test_a_file_without_contact_columns_cannot_be_contacted_from() -> None:
    reviewed = run(f"NHS number,Name\n{nhs(20)},Ann Smith\n")
    assert [r.reason for r in reviewed] == ["unable_to_retrieve_contact_details"]


def test_email_in_the_list_takes_the_patient_past_a_bad_mobile() -> None:
    # Email has priority in a batch, so the mobile is not the path: contactable.
    (one,) = run(f"NHS number,Mobile,Email\n{nhs(30)},0161 496 0000,ann@example.org\n")
    assert one.reason is None


def test_self_book_never_goes_by_email() -> None:
    plan = BatchPlan("b-sb", "A81001", "self_book", "Book your review: https://example.org")
    columns, rows = read_rows(io.StringIO(f"NHS number,Email\n{nhs(31)},ann@example.org\n"))
    (one,) = review(rows, columns, plan, practice=None, now=NOW, failed_recently=lambda _: False)
    assert one.reason == "contact_details_not_provided"


def test_sequence_numbers_count_only_contactable_rows() -> None:
    text = f"NHS number,Mobile\n{nhs(40)},07911123456\nbad,07911123456\n{nhs(41)},07911123457\n"
    ids = [r.request.message_id for r in run(text) if r.request is not None]
    assert ids == ["b-test.000000", "b-test.000001"]


def test_blank_lines_are_skipped_and_lines_are_counted_from_the_header() -> None:
    text = f"NHS number,Mobile\n\n{nhs(50)},07911123456\n,\n1,2\n"
    reviewed = run(text)
    assert [(r.row.line, r.reason) for r in reviewed] == [(3, None), (5, "invalid_nhs_number")]


def test_the_non_contactable_list_uses_the_seeds_words() -> None:
    (bad,) = run("NHS number,Mobile,Name\n1234567890,07911123456,Ann Smith\n")
    assert non_contactable_row(bad) == ("2", "1234567890", "Ann Smith", "", "Invalid NHS number")
    assert REASONS["not_uk_phone_number"] == "Not a UK phone number"


@pytest.mark.parametrize(
    "text",
    ["", "Mobile,Email\n07911123456,\n"],
)
def test_a_file_that_is_no_patient_list_is_refused(text: str) -> None:
    with pytest.raises(BatchFileError):
        run(text)


def test_rows_are_read_and_reviewed_one_at_a_time() -> None:
    """An endless file: the first rows come out all the same, so nothing reads the whole
    file first (a 100,000-row list costs memory only for the NHS numbers seen)."""

    def lines():  # type: ignore[no-untyped-def]
        yield "NHS number,Mobile\n"
        i = 0
        while True:
            yield f"{nhs(i)},07911{i % 1_000_000:06d}\n"
            i += 1

    columns, rows = read_rows(lines())
    reviewed = review(rows, columns, PLAN, practice=None, now=NOW, failed_recently=lambda _: False)
    first = list(itertools.islice(reviewed, 1000))
    assert Counter(r.reason for r in first) == {None: 1000}


# --- the schedule -----------------------------------------------------------------------


def test_a_batch_not_staggered_goes_all_at_its_time() -> None:
    s = Schedule(send_at=100.0)
    assert s.released_by(99.9, 500) == 0
    assert s.released_by(100.0, 500) == 500
    assert s.next_release(0, 500) == 100.0


def test_a_stagger_releases_n_per_period_in_order() -> None:
    s = Schedule(send_at=100.0, count=50, every=60.0)
    assert [s.released_by(t, 120) for t in (99, 100, 159.9, 160, 220, 10_000)] == [
        0,
        50,
        50,
        100,
        120,
        120,
    ]
    assert s.release_at(0) == 100.0 and s.release_at(49) == 100.0 and s.release_at(50) == 160.0
    assert s.next_release(100, 120) == 220.0
    assert s.next_release(120, 120) is None


@pytest.mark.parametrize(
    "kwargs",
    [{"count": 10}, {"every": 60.0}, {"count": 0, "every": 60.0}, {"count": 5, "every": 0.0}],
)
def test_a_stagger_needs_a_count_and_a_positive_period(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Schedule(send_at=0.0, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400)]
)
def test_periods(text: str, seconds: float) -> None:
    assert parse_period(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "soon", "5w"])
def test_bad_periods(text: str) -> None:
    with pytest.raises(ValueError):
        parse_period(text)


# --- a batch's progress -----------------------------------------------------------------


def progress(**kwargs: object) -> Progress:
    plan = {"send_at": 100.0, "contactable": 10, "stagger_count": 4, "stagger_every_seconds": 60.0}
    return Progress("b", 0, **{"plan": plan, **kwargs})  # type: ignore[arg-type]


def test_nothing_is_released_before_the_plan() -> None:
    # The plan is written after every patient: without it, the upload died half way.
    assert Progress("b", 0).due(1e9) == 0
    assert progress().due(1e9) == 10


def test_release_follows_the_stagger_and_never_goes_back() -> None:
    p = progress()
    assert [p.due(t) for t in (99, 100, 160, 220)] == [0, 4, 8, 10]
    assert progress(released=8).due(100) == 8


def test_a_cancelled_batch_releases_no_more() -> None:
    assert progress(released=4, cancelled_at=130.0).due(1e9) == 4


def test_statuses() -> None:
    assert Progress("b", 0).status(0) is None
    assert progress().status(0) == "scheduled"
    assert progress(released=4).status(150) == "sending"
    assert progress(released=10, settled=9).status(500) == "sending", "awaiting receipts"
    assert progress(released=10, settled=10).status(500) == "done"
    assert progress(released=4, cancelled_at=130.0).status(500) == "cancelled"


def test_next_release() -> None:
    assert progress().next_release_at() == 100.0
    assert progress(released=4).next_release_at() == 160.0
    assert progress(released=10).next_release_at() is None


def test_progress_survives_encoding() -> None:
    p = progress(released=4, revoked_at=5.0)
    assert Progress.from_json(p.to_json()) == p
    assert p.counted({"delivered": 3, "settled": 4}).delivered == 3
