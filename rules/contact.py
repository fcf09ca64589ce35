"""Contact details: UK mobile numbers and SMS fragments.

Fragments follow GSM 03.38: a body that fits the GSM-7 alphabet costs 160 characters in one
fragment or 153 per fragment when concatenated, extension characters counting two; any
other character makes the whole body UCS-2, 70 in one fragment or 67 per fragment.
"""

from __future__ import annotations

import hashlib
import hmac

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

# GOV.UK Notify's limit for one text message.
SMS_MAX_CHARACTERS = 918

_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


def gsm7_length(body: str) -> int | None:
    """Septets needed in GSM-7, or None if the body needs UCS-2."""
    if _GSM7_BASIC.issuperset(body):
        return len(body)  # most bodies: one septet a character, counted without a loop
    length = 0
    for ch in body:
        if ch in _GSM7_BASIC:
            length += 1
        elif ch in _GSM7_EXTENSION:
            length += 2
        else:
            return None
    return length


def sms_fragments(body: str) -> int:
    septets = gsm7_length(body)
    if septets is not None:
        return 1 if septets <= 160 else -(-septets // 153)
    # UCS-2 counts UTF-16 code units: characters outside the BMP take two.
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


def sms_length(body: str) -> int:
    """Characters as the SMS provider counts them against its limit."""
    septets = gsm7_length(body)
    return septets if septets is not None else len(body)


def normalise_uk_mobile(raw: str | None) -> str | None:
    """E.164 form of a UK (+44) mobile number, or None if it is not one.

    Numbers are read as UK numbers unless written with another country code. Crown
    dependency mobiles (+44 7624, 7781, 7797...) are +44 mobiles and accepted.
    """
    if not raw or not raw.strip():
        return None
    try:
        number = phonenumbers.parse(raw, "GB")
    except NumberParseException:
        return None
    # number_type is UNKNOWN for a number is_valid_number refuses (both classify the
    # number against its region's patterns), so asking it alone decides both: phonenumbers
    # is a quarter of routing's own time, and this halves it.
    if number.country_code != 44 or phonenumbers.number_type(number) not in (
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def number_fingerprint(e164: str, key: bytes) -> str:
    """A keyed hash of a phone number: lets tables and topics remember that a number failed
    without holding the number itself."""
    return hmac.new(key, e164.encode(), hashlib.sha256).hexdigest()[:32]
