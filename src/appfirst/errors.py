"""Every error appfirst raises on purpose, in one tree::

AppfirstError
├── DecodeError            bytes that are not a valid event (reason, codec)
│   └── UnknownSchemaError an Avro fingerprint or registry id we cannot resolve
├── RoutingError           a valid request no rule can serve (never expected)
└── ProviderError          a provider call failed (provider, status)
    ├── ProviderRejected   4xx: the request itself is wrong; do not retry (code)
    └── ProviderUnavailable 429/5xx/transport: retry later (retry_after)
        ├── Throttled      429: over a rate limit or quota (kind)
        └── Unauthorised   401: credentials refused or expired; renew, then retry
    SentUnconfirmed        the provider may or may not have the message; never resend
    GivenUp                the NHS App did not accept a message in time: fall back (reason)
"""

from __future__ import annotations


class AppfirstError(Exception):
    """Base of all appfirst errors."""


class DecodeError(AppfirstError):
    def __init__(self, reason: str, *, codec: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.codec = codec


class UnknownSchemaError(DecodeError):
    pass


class RoutingError(AppfirstError):
    pass


class ProviderError(AppfirstError):
    def __init__(self, provider: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.status = status


class ProviderRejected(ProviderError):
    def __init__(
        self, provider: str, message: str, *, status: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(provider, message, status=status)
        self.code = code


class ProviderUnavailable(ProviderError):
    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(provider, message, status=status)
        self.retry_after = retry_after
        # The request may have reached the provider and been acted on (a read timeout, a
        # dropped connection, a 502/504): resending could send the message twice.
        self.ambiguous = ambiguous


class Throttled(ProviderUnavailable):
    def __init__(
        self, provider: str, message: str, *, kind: str, retry_after: float | None = None
    ) -> None:
        super().__init__(provider, message, status=429, retry_after=retry_after)
        self.kind = kind


class Unauthorised(ProviderUnavailable):
    pass


class SendAbandoned(AppfirstError):
    """A send given up before its next attempt because the worker is stopping: nothing is
    in flight, and the partition's next owner sends it."""


class SentUnconfirmed(ProviderError):
    """An NHS App send whose outcome is unknown. It is not resent (that could show the
    patient the message twice); its receipts or its fallback deadline settle it."""


class GivenUp(ProviderError):
    """The NHS App is given up for one message (``rules/sending.GiveUp``): not accepted in
    time, an outage longer than that, or credentials it refuses. It becomes a ``failed``
    NHS App receipt, and the fallback SMS goes at once."""

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(provider, f"given up: {reason}")
        self.reason = reason
