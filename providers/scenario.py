"""Patient behaviour for the simulator: who reads, who is never notified, who responds, and
how long it takes. Loaded from a JSON file of the same shape, or the defaults below."""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class Scenario(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 7
    send_callbacks: bool = Field(default=True, description="False: a silent sandbox")
    time_scale: float = Field(default=1.0, gt=0, description="simulated delays are divided by this")
    # NHS App: who has it (answered by the eligibility lookup)
    app_share: float = Field(default=0.6, ge=0, le=1)
    notifications_share: float = Field(default=0.85, ge=0, le=1, description="of app users")
    # NHS App messages
    unnotified_share: float = Field(default=0.05, ge=0, le=1)
    failed_share: float = Field(default=0.02, ge=0, le=1)
    read_share: float = Field(default=0.75, ge=0, le=1, description="of notified messages")
    read_median_seconds: float = Field(default=1800, gt=0)
    # SMS and email
    sms_failed_share: float = Field(default=0.03, ge=0, le=1)
    delivery_seconds: float = Field(default=3, gt=0)
    # Responses (to message types that take one)
    respond_share_app: float = Field(default=0.45, ge=0, le=1, description="after reading")
    respond_share_sms: float = Field(default=0.55, ge=0, le=1)
    respond_median_seconds: float = Field(default=2400, gt=0)
    spread: float = Field(default=1.0, gt=0, description="log-normal sigma of every delay")

    @classmethod
    def load(cls, path: str | Path | None) -> Scenario:
        if path is None:
            return cls()
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))

    def rng(self, reference: str) -> random.Random:
        """The same reference always behaves the same, run after run."""
        digest = hashlib.sha256(f"{self.seed}:{reference}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def delay(self, rng: random.Random, median: float) -> float:
        """A log-normal delay in real seconds (simulated seconds over the time scale)."""
        return median * math.exp(rng.gauss(0, self.spread)) / self.time_scale


RESPONDING_TYPES = frozenset(
    {
        "sms_with_response",
        "questionnaire",
        "bp_monitoring_questionnaire",
        "self_book",
        "video_invite",
    }
)
