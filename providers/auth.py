"""How we prove who we are to each provider.

- NHS App: application-restricted, signed JWT. A short-lived client assertion (RS512, with
  the key id registered on the developer portal) is exchanged at the OAuth 2.0 token
  endpoint for a bearer access token, reused until shortly before it expires.
- GOV.UK Notify: each request carries a fresh HS256 JWT whose issuer is the service id and
  whose key is the secret half of the API key.

The matching checks (``verify_*``) are what the simulator runs, so a client that would be
refused by the real service is refused on loopback too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from appfirst.errors import ProviderRejected, ProviderUnavailable

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 300  # the most the NHS API platform accepts
NOTIFY_CLOCK_SKEW = 30  # Notify refuses a token issued more than 30 s from its clock
REFRESH_MARGIN = 60.0  # renew an access token this long before it expires


class AuthError(Exception):
    """A credential that the checking side refuses; the message names the reason only."""


# --- NHS App: signed JWT -> access token ---------------------------------------------------
def client_assertion(
    api_key: str, token_url: str, private_key: Any, key_id: str, now: float
) -> str:
    claims = {
        "iss": api_key,
        "sub": api_key,
        "aud": token_url,
        "jti": str(uuid.uuid4()),
        "exp": int(now) + ASSERTION_LIFETIME,
    }
    return jwt.encode(claims, private_key, algorithm="RS512", headers={"kid": key_id})


def verify_client_assertion(
    assertion: str, *, public_key: Any, api_key: str, token_url: str, key_id: str
) -> None:
    """The token endpoint's checks: signature, key id, issuer = subject = API key, audience,
    expiry no more than five minutes ahead."""
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(
            assertion,
            public_key,
            algorithms=["RS512"],
            audience=token_url,
            options={"require": ["iss", "sub", "aud", "jti", "exp"]},
        )
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid client assertion: {type(exc).__name__}") from exc
    if header.get("kid") != key_id:
        raise AuthError("unknown key id")
    if claims["iss"] != api_key or claims["sub"] != api_key:
        raise AuthError("issuer and subject must be the API key")
    if claims["exp"] > time.time() + ASSERTION_LIFETIME + 5:
        raise AuthError("assertion lives longer than five minutes")


class SignedJwtAuth:
    """Bearer tokens for the NHS App API, fetched once and shared by concurrent callers."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        token_url: str,
        api_key: SecretStr,
        private_key_pem: bytes,
        key_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._token_url = token_url
        self._api_key = api_key
        self._key = serialization.load_pem_private_key(private_key_pem, password=None)
        self._key_id = key_id
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.fetched = 0

    async def headers(self) -> dict[str, str]:
        if self._token is None or self._clock() >= self._expires:
            async with self._lock:
                if self._token is None or self._clock() >= self._expires:
                    await self._fetch()
        return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self, header: str | None = None) -> None:
        """The API said 401 to ``header``: that token was revoked or expired early. A token
        fetched since by another caller is kept."""
        if header is None or header == f"Bearer {self._token}":
            self._token = None

    async def _fetch(self) -> None:
        now = self._clock()
        assertion = client_assertion(
            self._api_key.get_secret_value(), self._token_url, self._key, self._key_id, now
        )
        try:
            response = await self._client.post(
                self._token_url,
                data={
                    "grant_type": "client_credentials",
                    "client_assertion_type": CLIENT_ASSERTION_TYPE,
                    "client_assertion": assertion,
                },
            )
        except httpx.HTTPError as exc:
            raise ProviderUnavailable("nhs_app_auth", type(exc).__name__) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise ProviderUnavailable(
                "nhs_app_auth", f"HTTP {response.status_code}", status=response.status_code
            )
        if response.status_code != 200:
            # A refused assertion is a configuration fault: retrying with the same key
            # cannot succeed, but holding messages until it is fixed loses none of them.
            raise ProviderUnavailable(
                "nhs_app_auth",
                f"token endpoint refused the client assertion (HTTP {response.status_code})",
                status=response.status_code,
                retry_after=30.0,
            )
        try:
            body = response.json()
            # The API platform sends expires_in as a string ("599").
            lifetime = float(body.get("expires_in", 0))
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProviderUnavailable("nhs_app_auth", "unreadable token response") from exc
        self._token = token
        self._expires = now + max(0.0, lifetime - REFRESH_MARGIN)
        self.fetched += 1


# --- GOV.UK Notify: HS256 JWT per request --------------------------------------------------
def split_notify_key(api_key: str) -> tuple[str, str]:
    """``{key_name}-{service_id}-{secret}``: both ids are 36-character UUIDs at the end."""
    if len(api_key) < 74 or api_key[-37] != "-" or api_key[-74] != "-":
        raise ProviderRejected("notify", "API key is not {name}-{service id}-{secret}")
    return api_key[-73:-37], api_key[-36:]


def notify_token(api_key: SecretStr, now: float) -> str:
    service_id, secret = split_notify_key(api_key.get_secret_value())
    return jwt.encode({"iss": service_id, "iat": int(now)}, secret, algorithm="HS256")


def verify_notify_token(token: str, *, service_id: str, secret: str, now: float) -> None:
    try:
        # Notify allows 30 s of clock difference either way (notifications-python-client).
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            leeway=NOTIFY_CLOCK_SKEW,
            options={"require": ["iss", "iat"]},
        )
    except jwt.PyJWTError as exc:
        raise AuthError(f"Invalid token: {type(exc).__name__}") from exc
    if claims["iss"] != service_id:
        raise AuthError("Invalid token: service id not found")
    if abs(now - float(claims["iat"])) > NOTIFY_CLOCK_SKEW:
        raise AuthError("Error: Your system clock must be accurate to within 30 seconds")


# --- keys ----------------------------------------------------------------------------------
def generate_private_key_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_of(private_key_pem: bytes) -> Any:
    return serialization.load_pem_private_key(private_key_pem, password=None).public_key()


def ensure_sandbox_key(path: Path) -> bytes:
    """The simulator's key pair, made once per data directory; safe when two processes race
    (the loser reads the winner's key)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(generate_private_key_pem())
            os.chmod(tmp, 0o600)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return path.read_bytes()
