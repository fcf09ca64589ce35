"""What ``streams/`` needs of a provider: an ``Outbound`` message and a ``Sender``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

OutboundChannel = Literal["nhs_app", "sms", "email"]


@dataclass(frozen=True)
class Outbound:
    channel: OutboundChannel
    reference: str  # deterministic per message and leg: the provider's idempotency key
    message_id: str
    ods_code: str
    body: str
    message_type: str = "sms"
    nhs_number: str | None = None
    mobile: str | None = None
    email: str | None = None


class Sender(Protocol):
    async def send(self, message: Outbound) -> str:
        """Send once; return the provider's id for the message. Raises ProviderError."""
        ...

    def stop_new_attempts(self) -> None:
        """Start no further attempt: ``send`` raises ``SendAbandoned`` instead."""
        ...

    async def aclose(self) -> None: ...
