"""SMS fragments, UK mobile normalisation and NHS number check digits."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType

from appfirst.rules.contact import (
    _GSM7_BASIC,
    _GSM7_EXTENSION,
    gsm7_length,
    normalise_uk_mobile,
    sms_fragments,
)
from appfirst.rules.nhs_number import check_digit, is_valid_nhs_number

# --- SMS fragments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ("a", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("a" * 459, 3),
        ("a" * 460, 4),
        ("£é@\n" * 40, 1),  # basic-alphabet accents, symbols and newline are one septet each
        ("£é@\n" * 40 + "x", 2),
    ],
    ids=["1", "160", "161", "306", "307", "459", "460", "basic-specials-160", "basic-specials-161"],
)
def test_gsm7_fragments(body: str, fragments: int) -> None:
    assert gsm7_length(body) == len(body)
    assert sms_fragments(body) == fragments


@pytest.mark.parametrize("ext", ["€", "[", "]", "^", "{", "}", "\\", "~", "|"])
def test_gsm7_extension_characters_count_two_septets(ext: str) -> None:
    assert gsm7_length(ext) == 2
    assert gsm7_length("a" * 158 + ext) == 160
    assert sms_fragments("a" * 158 + ext) == 1
    assert sms_fragments("a" * 159 + ext) == 2
    assert sms_fragments(ext * 80) == 1
    assert sms_fragments(ext * 81) == 2
    assert sms_fragments(ext * 153) == 2  # 306 septets
    assert sms_fragments(ext * 154) == 3  # 308 septets


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ("ł" * 70, 1),
        ("ł" * 71, 2),
        ("ł" * 134, 2),
        ("ł" * 135, 3),
        ("a" * 69 + "ł", 1),
        ("a" * 70 + "ł", 2),
        ("a" * 133 + "ł", 2),
        ("a" * 134 + "ł", 3),
        ("€" * 69 + "ł", 1),  # in UCS-2 the extension characters are one unit, not two
        ("ç" * 70, 1),  # lower-case c cedilla is not in the GSM-7 basic set
        ("☺" * 70, 1),  # a BMP symbol is one UTF-16 unit
        ("☺" * 71, 2),
    ],
    ids=[
        "l-stroke-70",
        "l-stroke-71",
        "l-stroke-134",
        "l-stroke-135",
        "mixed-70",
        "mixed-71",
        "mixed-134",
        "mixed-135",
        "ext-in-ucs2-70",
        "c-cedilla-70",
        "bmp-symbol-70",
        "bmp-symbol-71",
    ],
)
def test_ucs2_fragments(body: str, fragments: int) -> None:
    assert gsm7_length(body) is None
    assert sms_fragments(body) == fragments


def test_one_non_gsm_character_switches_the_whole_body_to_ucs2() -> None:
    assert sms_fragments("a" * 100) == 1
    assert sms_fragments("a" * 100 + "ł") == 2
    assert sms_fragments("a" * 100 + "\U0001f600") == 2


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ("\U0001f600" * 35, 1),  # 70 UTF-16 units
        ("\U0001f600" * 36, 2),  # 72 units
        ("a" * 68 + "\U0001f600", 1),  # 70 units
        ("a" * 69 + "\U0001f600", 2),  # 71 units
        ("\U0001f600" * 67, 2),  # 134 units
        ("a" * 133 + "\U0001f600", 3),  # 135 units
    ],
    ids=["emoji-35", "emoji-36", "68+emoji", "69+emoji", "emoji-67", "133+emoji"],
)
def test_emoji_outside_the_bmp_counts_two_units(body: str, fragments: int) -> None:
    assert sms_fragments(body) == fragments


@settings(max_examples=100, deadline=None, database=None)
@given(st.text(min_size=1, max_size=1000))
def test_fragments_are_positive_and_monotone(body: str) -> None:
    fragments = sms_fragments(body)
    assert fragments >= 1
    assert sms_fragments(body + "a") >= fragments


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(st.sampled_from([*sorted(_GSM7_BASIC | _GSM7_EXTENSION), "é", "ş", "😀"])))
def test_gsm7_length_counts_each_character_as_the_loop_does(body: str) -> None:
    # The reference: every character one septet, extension characters two, any other
    # character UCS-2. The function counts a body of basic characters without its loop.
    reference: int | None = 0
    for ch in body:
        if ch in _GSM7_BASIC:
            reference = None if reference is None else reference + 1
        elif ch in _GSM7_EXTENSION:
            reference = None if reference is None else reference + 2
        else:
            reference = None
    assert gsm7_length(body) == reference


# --- UK mobiles -------------------------------------------------------------------------


def _normalise_as_first_written(raw: str) -> str | None:
    """The first version, which asked phonenumbers both whether a number is valid and what
    type it is."""
    if not raw.strip():
        return None
    try:
        number = phonenumbers.parse(raw, "GB")
    except phonenumbers.NumberParseException:
        return None
    if number.country_code != 44 or not phonenumbers.is_valid_number(number):
        return None
    if phonenumbers.number_type(number) not in (
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_PREFIXES = ["07", "7", "+447", "+44 (0)7", "0044 7", "+44", "0", "+441", "01", "+1", "+353"]


@settings(max_examples=2000, deadline=None, database=None)
@given(st.sampled_from(_PREFIXES), st.text("0123456789", min_size=0, max_size=12))
def test_normalise_decides_as_the_first_version_did(prefix: str, digits: str) -> None:
    # Every UK range phonenumbers knows (mobile, pager, personal, Crown dependencies, fixed
    # lines), right lengths and wrong: asking the type alone decides as asking both did.
    raw = prefix + digits
    assert normalise_uk_mobile(raw) == _normalise_as_first_written(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "07911 123456",
        "+44 7911 123456",
        "447911123456",
        "07911123456",
        "+447911123456",
        "0044 7911 123456",
        "+44 (0)7911 123456",
        " 07911-123-456 ",
    ],
)
def test_uk_mobiles_normalise_to_e164(raw: str) -> None:
    assert normalise_uk_mobile(raw) == "+447911123456"


def test_crown_dependency_mobile_is_a_plus44_mobile() -> None:
    assert normalise_uk_mobile("07624 123456") == "+447624123456"


@pytest.mark.parametrize(
    "raw",
    [
        "020 7946 0000",  # London landline
        "+44 20 7946 0000",
        "0161 496 0000",  # Manchester landline
        "0800 123 4567",  # freephone
        "+33 6 12 34 56 78",  # French mobile
        "+1 202 555 0147",
        "+353 85 123 4567",  # Irish mobile
        "07911 12345",  # too short
        "07911 1234567",  # too long
        "garbage",
        "not a number",
        "++",
        "",
        "   ",
        None,
    ],
    ids=[
        "london-landline",
        "london-landline-intl",
        "manchester-landline",
        "freephone",
        "french-mobile",
        "us-number",
        "irish-mobile",
        "too-short",
        "too-long",
        "garbage",
        "words",
        "plus-plus",
        "empty",
        "blank",
        "none",
    ],
)
def test_not_uk_mobiles_give_none(raw: str | None) -> None:
    assert normalise_uk_mobile(raw) is None


@settings(max_examples=100, deadline=None, database=None)
@given(st.text(max_size=30))
def test_normalise_never_raises_and_is_idempotent(raw: str) -> None:
    result = normalise_uk_mobile(raw)
    if result is not None:
        assert result.startswith("+447")
        assert result[1:].isdigit()
        assert normalise_uk_mobile(result) == result


# --- NHS numbers ------------------------------------------------------------------------

PREFIXES = ["943476591", "401023213", "123456788", "000000000", "999999999", "485777345"]


def _valid(first_nine: str) -> str:
    digit = check_digit(first_nine)
    assert digit is not None
    return first_nine + str(digit)


def test_known_nhs_number_example() -> None:
    # The NHS Data Dictionary's worked example.
    assert check_digit("943476591") == 9
    assert is_valid_nhs_number("9434765919")


@pytest.mark.parametrize("first_nine", [p for p in PREFIXES if check_digit(p) is not None])
def test_valid_nhs_numbers(first_nine: str) -> None:
    assert is_valid_nhs_number(_valid(first_nine))


@pytest.mark.parametrize("first_nine", [p for p in PREFIXES if check_digit(p) is not None])
def test_wrong_check_digit_is_invalid(first_nine: str) -> None:
    right = check_digit(first_nine)
    assert right is not None
    for wrong in range(10):
        if wrong != right:
            assert not is_valid_nhs_number(first_nine + str(wrong))


def _weighted_total(prefix: str) -> int:
    return sum(int(d) * w for d, w in zip(prefix, range(10, 1, -1), strict=True))


def test_remainder_zero_gives_check_digit_zero() -> None:
    # 11 - 0 = 11, which the modulus-11 rule turns into 0.
    prefix = next(
        p for p in (str(n) for n in range(400_000_000, 400_001_000)) if _weighted_total(p) % 11 == 0
    )
    assert check_digit(prefix) == 0
    assert is_valid_nhs_number(prefix + "0")


def _prefixes_with_check_digit_ten() -> list[str]:
    found = []
    for n in range(100_000_000, 100_000_200):
        prefix = str(n).zfill(9)
        if 11 - _weighted_total(prefix) % 11 == 10:
            found.append(prefix)
    return found[:5]


@pytest.mark.parametrize("first_nine", _prefixes_with_check_digit_ten())
def test_check_digit_ten_means_no_valid_number(first_nine: str) -> None:
    assert check_digit(first_nine) is None
    for last in range(10):
        assert not is_valid_nhs_number(first_nine + str(last))


@pytest.mark.parametrize(
    "value",
    [
        "94347659a9",
        "943476591X",
        "943 476 5919",
        "943-476-5919",
        " 9434765919",
        "9434765919 ",
        "-943476591",
        "".join(chr(0xFF10 + int(d)) for d in "9434765919"),  # full-width digits
        "".join(chr(0x0660 + int(d)) for d in "9434765919"),  # Arabic-Indic digits
        "",
    ],
    ids=[
        "letter-inside",
        "letter-check",
        "spaces",
        "dashes",
        "leading-space",
        "trailing-space",
        "minus",
        "full-width",
        "arabic-indic",
        "empty",
    ],
)
def test_non_digits_are_invalid(value: str) -> None:
    assert not is_valid_nhs_number(value)


@pytest.mark.parametrize("value", ["943476591", "94347659190", "9", "09434765919"])
def test_wrong_length_is_invalid(value: str) -> None:
    assert not is_valid_nhs_number(value)


@settings(max_examples=200, deadline=None, database=None)
@given(st.text("0123456789", min_size=9, max_size=9))
def test_at_most_one_check_digit_completes_nine_digits(first_nine: str) -> None:
    valid = [d for d in range(10) if is_valid_nhs_number(first_nine + str(d))]
    digit = check_digit(first_nine)
    assert valid == ([] if digit is None else [digit])


def test_there_are_prefixes_with_check_digit_ten() -> None:
    assert len(_prefixes_with_check_digit_ten()) == 5
