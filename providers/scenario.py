"""Patient behaviour for the simulator: who has the NHS App, who reads, who is never
notified, who responds, and how long it takes; plus the sandbox's own limits. Loaded from a
JSON file of the same shape, or the defaults below."""

from __future__ import annotations

import hashlib
import json
import random
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from appfirst.rules.nhs_number import check_digit


class Responsiveness(BaseModel):
    """How patients answer one message type, by the way it reached them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sms_share: float = Field(ge=0, le=1, description="answer an SMS")
    sms_median_seconds: float = Field(gt=0, description="from the SMS's delivery")
    app_share: float = Field(ge=0, le=1, description="answer after reading it in the NHS App")
    app_median_seconds: float = Field(gt=0, description="from reading")
    fallback_share: float = Field(
        ge=0, le=1, description="answer the fallback SMS of an NHS App message left unread"
    )


class Scenario(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 7
    send_callbacks: bool = Field(default=True, description="False: a silent sandbox")
    time_scale: float = Field(default=1.0, gt=0, description="simulated delays are divided by this")
    # Practices' patients (the patients report) and who among them has the NHS App
    roster_size: int = Field(default=400, ge=0, description="registered patients per practice")
    app_share: float = Field(default=0.6, ge=0, le=1)
    notifications_share: float = Field(default=0.85, ge=0, le=1, description="of app users")
    report_page_size: int = Field(default=250, ge=1)
    # NHS App messages
    unnotified_share: float = Field(default=0.05, ge=0, le=1)
    failed_share: float = Field(default=0.02, ge=0, le=1, description="rejected on arrival")
    read_share: float = Field(default=0.75, ge=0, le=1, description="of notified messages")
    read_median_seconds: float = Field(default=1800, gt=0)
    callback_loss_share: float = Field(
        default=0.0, ge=0, le=1, description="real-time receipts never posted (report only)"
    )
    # SMS and email
    sms_failed_share: float = Field(default=0.03, ge=0, le=1)
    delivery_seconds: float = Field(default=3, gt=0)
    # Responses (to message types that take one)
    respond_share_app: float = Field(default=0.45, ge=0, le=1, description="after reading")
    respond_share_sms: float = Field(default=0.55, ge=0, le=1)
    respond_median_seconds: float = Field(default=2400, gt=0)
    responses: dict[str, Responsiveness] = Field(
        default_factory=dict, description="per message type; others use the shares above"
    )
    spread: float = Field(default=1.0, gt=0, description="log-normal sigma of every delay")
    # The sandbox's limits, as the real services publish them
    nhs_app_rate_per_second: float = Field(default=20, gt=0)
    notify_rate_per_minute: float = Field(default=3000, gt=0)
    token_lifetime_seconds: float = Field(default=599, gt=0)

    @classmethod
    def load(cls, path: str | Path | None) -> Scenario:
        if path is None:
            return cls()
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))

    def rng(self, reference: str) -> random.Random:
        """The same reference always behaves the same, run after run."""
        digest = hashlib.sha256(f"{self.seed}:{reference}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def responsiveness(self, message_type: str) -> Responsiveness | None:
        """None: the message type takes no answer."""
        if message_type in self.responses:
            return self.responses[message_type]
        if message_type not in RESPONDING_TYPES:
            return None
        return Responsiveness(
            sms_share=self.respond_share_sms,
            sms_median_seconds=self.respond_median_seconds,
            app_share=self.respond_share_app,
            app_median_seconds=self.respond_median_seconds,
            fallback_share=self.respond_share_sms,
        )

    def app_user(self, nhs_number: str) -> bool | None:
        """None: no NHS App; else whether notifications are on. Fixed per patient."""
        rng = self.rng(f"patient:{nhs_number}")
        if rng.random() >= self.app_share:
            return None
        return rng.random() < self.notifications_share

    def roster(self, ods_code: str) -> tuple[str, ...]:
        return _roster(self.seed, ods_code.upper(), self.roster_size)


@lru_cache(maxsize=4096)
def _roster(seed: int, ods_code: str, size: int) -> tuple[str, ...]:
    """A practice's registered patients: valid NHS numbers, the same every run."""
    rng = random.Random(f"{seed}:roster:{ods_code}")
    found: list[str] = []
    while len(found) < size:
        first = f"{rng.randrange(400_000_000, 999_999_999):09d}"
        digit = check_digit(first)
        if digit is not None:
            found.append(first + str(digit))
    return tuple(found)


RESPONDING_TYPES = frozenset(
    {
        "sms_with_response",
        "questionnaire",
        "bp_monitoring_questionnaire",
        "self_book",
        "video_invite",
    }
)
