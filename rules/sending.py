"""Pure decisions of the send path: which lane and priority a send takes, what a ledger row
says about a reference, when the NHS App is given up, and a worker's share of a limit.

The dispatcher (``streams/dispatcher.py``) calls these; nothing here does I/O or reads a
clock, so every rule is unit-tested on its own (``tests/unit/rules/test_sending.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

Lane = Literal["nhs_app", "notify"]

# Lower goes first. The fallback SMS is the safety net of a message already late; an
# individual message is one a clinician is waiting on; a batch of 45,000 at 20 a second
# takes 37 minutes, and nothing individual may wait behind it.
PRIORITY_FALLBACK = 0
PRIORITY_INDIVIDUAL = 1
PRIORITY_BATCH = 2


def lane(channel: str) -> Lane:
    """NHS App sends and Notify sends (SMS, email) never wait on each other."""
    return "nhs_app" if channel == "nhs_app" else "notify"


def priority(kind: str, origin: str | None) -> int:
    if kind == "fallback":
        return PRIORITY_FALLBACK
    return PRIORITY_BATCH if origin == "batch" else PRIORITY_INDIVIDUAL


class Next(Enum):
    """What to do with a reference, given its ledger row."""

    SEND = "send"  # never tried, or every try was refused before it could arrive
    ABSORB = "absorb"  # finished: sent, rejected, given up or unconfirmed
    LOOKUP = "lookup"  # an attempt may have reached Notify: ask it by reference first
    UNCONFIRMED = "unconfirmed"  # an NHS App attempt may have arrived: never resend


FINAL_KEYS = ("provider_id", "rejected", "unconfirmed", "given_up")


def next_step(row: dict[str, Any] | None, lane_: Lane) -> Next:
    """The ledger row of a reference -> what the dispatcher does with it.

    ``attempt`` is written (and flushed) before every request: a row that still has it
    when read again belongs to a process that died with a request in flight. Notify can be
    asked what it holds under a reference; the NHS App cannot, so a second NHS App message
    is never risked: the fallback SMS is the safety net.
    """
    if row is None:
        return Next.SEND
    if any(key in row for key in FINAL_KEYS):
        return Next.ABSORB
    if row.get("attempt") is not None:
        return Next.LOOKUP if lane_ == "notify" else Next.UNCONFIRMED
    return Next.SEND  # only ``tried``: every attempt was refused, none in flight


def first_tried(row: dict[str, Any] | None) -> float | None:
    """Wall-clock time of the reference's first attempt, kept across owners."""
    if row is None:
        return None
    value = row.get("attempt") or row.get("tried")
    return float(value) if value is not None else None


@dataclass(frozen=True)
class GiveUp:
    """When the NHS App is given up for one message (it then falls back to SMS at once)."""

    after_seconds: float  # since the message's first attempt
    config_probe_seconds: float = 30.0  # how often a misconfigured provider is tried again

    def due(
        self,
        *,
        now: float,
        first_attempt: float | None,
        failing_since: float | None,
        misconfigured_since: float | None,
        last_probe: float | None,
    ) -> str | None:
        """A reason to give up now, or None to (go on) trying.

        - ``configuration``: the provider refuses our credentials (token endpoint 401, or
          403). Retrying with the same key cannot succeed; holding the message would leave
          the patient with nothing. One probe every ``config_probe_seconds`` finds the fix.
        - ``timeout``: this message has been tried for ``after_seconds`` without being
          accepted.
        - ``outage``: the provider has failed every call for ``after_seconds``: the
          messages queued behind the outage go to SMS at once, not one timeout each.
        """
        if misconfigured_since is not None and (
            last_probe is not None and now - last_probe < self.config_probe_seconds
        ):
            return "configuration"
        if first_attempt is not None and now - first_attempt >= self.after_seconds:
            return "timeout"
        if failing_since is not None and now - failing_since >= self.after_seconds:
            return "outage"
        return None


def share(owned: int, total: int) -> float:
    """This worker's share of a provider limit: the part of the partitions it sends for.

    Every message is sent by the owner of its partition, so shares by partition add up to
    one across the group whatever the number of workers, and no coordination is needed.
    Traffic skewed to a few partitions gets less than the whole limit: the price of not
    sharing a counter between processes.
    """
    if total <= 0:
        return 1.0
    return max(0.0, min(1.0, owned / total))
