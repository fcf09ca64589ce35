"""Provider credentials: the NHS App client assertion (RS512) and the Notify token (HS256)
are accepted by their matching checks and refused on any wrong part."""

from __future__ import annotations

import stat
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr

from appfirst.errors import ProviderRejected
from appfirst.providers.auth import (
    ASSERTION_LIFETIME,
    AuthError,
    client_assertion,
    ensure_sandbox_key,
    generate_private_key_pem,
    notify_token,
    public_key_of,
    split_notify_key,
    verify_client_assertion,
    verify_notify_token,
)

API_KEY = "app-api-key-0123456789"
TOKEN_URL = "https://int.api.service.nhs.uk/oauth2/token"
KEY_ID = "appfirst-int-1"


@pytest.fixture(scope="module")
def private_pem() -> bytes:
    return generate_private_key_pem()


@pytest.fixture(scope="module")
def other_pem() -> bytes:
    return generate_private_key_pem()


def _private_key(pem: bytes) -> Any:
    return serialization.load_pem_private_key(pem, password=None)


def _assertion(pem: bytes, *, now: float | None = None) -> str:
    when = time.time() if now is None else now
    return client_assertion(API_KEY, TOKEN_URL, _private_key(pem), KEY_ID, when)


# --- NHS App: client assertion -------------------------------------------------------------
def test_client_assertion_round_trips(private_pem: bytes) -> None:
    verify_client_assertion(
        _assertion(private_pem),
        public_key=public_key_of(private_pem),
        api_key=API_KEY,
        token_url=TOKEN_URL,
        key_id=KEY_ID,
    )


def test_client_assertion_header_and_claims(private_pem: bytes) -> None:
    now = time.time()
    assertion = _assertion(private_pem, now=now)

    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == "RS512"
    assert header["kid"] == KEY_ID

    claims = jwt.decode(assertion, options={"verify_signature": False})
    assert claims["iss"] == API_KEY
    assert claims["sub"] == API_KEY
    assert claims["aud"] == TOKEN_URL
    assert claims["jti"]
    assert claims["exp"] <= now + 300
    assert claims["exp"] == int(now) + ASSERTION_LIFETIME


def test_each_client_assertion_has_a_fresh_jti(private_pem: bytes) -> None:
    now = time.time()
    first = jwt.decode(_assertion(private_pem, now=now), options={"verify_signature": False})
    second = jwt.decode(_assertion(private_pem, now=now), options={"verify_signature": False})
    assert first["jti"] != second["jti"]


@pytest.mark.parametrize(
    ("wrong", "value"),
    [
        ("key_id", "someone-elses-kid"),
        ("api_key", "another-api-key"),
        ("token_url", "https://api.service.nhs.uk/oauth2/token"),
    ],
)
def test_client_assertion_refused_on_a_wrong_part(
    private_pem: bytes, wrong: str, value: str
) -> None:
    expected: dict[str, Any] = {"api_key": API_KEY, "token_url": TOKEN_URL, "key_id": KEY_ID}
    expected[wrong] = value
    with pytest.raises(AuthError):
        verify_client_assertion(
            _assertion(private_pem), public_key=public_key_of(private_pem), **expected
        )


def test_client_assertion_refused_with_another_key_pair(
    private_pem: bytes, other_pem: bytes
) -> None:
    with pytest.raises(AuthError):
        verify_client_assertion(
            _assertion(private_pem),
            public_key=public_key_of(other_pem),
            api_key=API_KEY,
            token_url=TOKEN_URL,
            key_id=KEY_ID,
        )


def test_expired_client_assertion_is_refused(private_pem: bytes) -> None:
    with pytest.raises(AuthError):
        verify_client_assertion(
            _assertion(private_pem, now=time.time() - ASSERTION_LIFETIME - 60),
            public_key=public_key_of(private_pem),
            api_key=API_KEY,
            token_url=TOKEN_URL,
            key_id=KEY_ID,
        )


# --- GOV.UK Notify: HS256 token ------------------------------------------------------------
SERVICE_ID = str(uuid.UUID("26785a09-ab16-4eb0-8407-a37497a57506"))
SECRET = str(uuid.UUID("3d844edf-8d35-48ac-975b-e847b4f122b0"))
NOTIFY_KEY = SecretStr(f"appfirst_test-{SERVICE_ID}-{SECRET}")


def test_split_notify_key_returns_service_id_and_secret() -> None:
    assert len(SERVICE_ID) == len(SECRET) == 36
    assert split_notify_key(NOTIFY_KEY.get_secret_value()) == (SERVICE_ID, SECRET)


def test_split_notify_key_allows_hyphens_in_the_key_name() -> None:
    assert split_notify_key(f"my-key-name-{SERVICE_ID}-{SECRET}") == (SERVICE_ID, SECRET)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "not-a-notify-key",
        SECRET,
        f"{SERVICE_ID}-{SECRET}",  # no key name, so no separator before the service id
        f"name-{SERVICE_ID}{SECRET}",  # no separator between the two ids
        f"name-{SERVICE_ID}-{SECRET[:-1]}",  # secret one character short
    ],
)
def test_split_notify_key_rejects_malformed_keys(key: str) -> None:
    with pytest.raises(ProviderRejected):
        split_notify_key(key)


def test_notify_token_round_trips() -> None:
    now = time.time()
    token = notify_token(NOTIFY_KEY, now)
    verify_notify_token(token, service_id=SERVICE_ID, secret=SECRET, now=now)

    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims == {"iss": SERVICE_ID, "iat": int(now)}


@pytest.mark.parametrize(
    ("service_id", "secret"),
    [
        (SERVICE_ID, str(uuid.UUID("00000000-0000-4000-8000-000000000000"))),
        (str(uuid.UUID("11111111-1111-4111-8111-111111111111")), SECRET),
    ],
    ids=["wrong-secret", "wrong-service-id"],
)
def test_notify_token_refused_with_wrong_credentials(service_id: str, secret: str) -> None:
    now = time.time()
    with pytest.raises(AuthError):
        verify_notify_token(
            notify_token(NOTIFY_KEY, now), service_id=service_id, secret=secret, now=now
        )


@pytest.mark.parametrize("age", [31, 120])
def test_notify_token_issued_too_long_ago_is_refused(age: float) -> None:
    now = time.time()
    with pytest.raises(AuthError, match="30 seconds"):
        verify_notify_token(
            notify_token(NOTIFY_KEY, now - age), service_id=SERVICE_ID, secret=SECRET, now=now
        )


def test_notify_token_checked_against_the_given_clock() -> None:
    now = time.time()
    token = notify_token(NOTIFY_KEY, now)
    with pytest.raises(AuthError):
        verify_notify_token(token, service_id=SERVICE_ID, secret=SECRET, now=now + 31)


def test_notify_token_from_a_clock_slightly_behind_is_accepted() -> None:
    now = time.time()
    verify_notify_token(
        notify_token(NOTIFY_KEY, now - 29), service_id=SERVICE_ID, secret=SECRET, now=now
    )


def test_notify_token_from_a_clock_slightly_ahead_is_accepted() -> None:
    now = time.time()
    verify_notify_token(
        notify_token(NOTIFY_KEY, now + 20), service_id=SERVICE_ID, secret=SECRET, now=now
    )


@pytest.mark.parametrize("ahead", [31, 120])
def test_notify_token_from_a_clock_too_far_ahead_is_refused(ahead: float) -> None:
    now = time.time()
    with pytest.raises(AuthError):
        verify_notify_token(
            notify_token(NOTIFY_KEY, now + ahead), service_id=SERVICE_ID, secret=SECRET, now=now
        )


# --- sandbox key ---------------------------------------------------------------------------
def test_ensure_sandbox_key_creates_the_key_once(tmp_path: Path) -> None:
    path = tmp_path / "data" / "sandbox-key.pem"
    first = ensure_sandbox_key(path)
    second = ensure_sandbox_key(path)

    assert first == second == path.read_bytes()
    assert first.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_sandbox_key_signs_assertions_its_public_half_verifies(tmp_path: Path) -> None:
    pem = ensure_sandbox_key(tmp_path / "sandbox-key.pem")
    verify_client_assertion(
        _assertion(pem),
        public_key=public_key_of(pem),
        api_key=API_KEY,
        token_url=TOKEN_URL,
        key_id=KEY_ID,
    )


def test_generated_keys_differ() -> None:
    assert generate_private_key_pem() != generate_private_key_pem()
