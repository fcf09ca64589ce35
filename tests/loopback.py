"""HTTP clients for the tests' calls to their own processes on loopback (workers, the
simulator, Prometheus)."""

from __future__ import annotations

import ssl
from functools import cache
from typing import Any

import httpx


@cache
def _tls() -> ssl.SSLContext:
    # httpx builds a TLS context for every client, reading the CA bundle: 26 ms of CPU a
    # client (measured), and the tests make hundreds of short-lived clients for http:// calls
    # that never use one (2.4% of the suite's CPU in a profile). One context serves them all.
    return ssl.create_default_context()


def client(**kwargs: Any) -> httpx.AsyncClient:
    """``httpx.AsyncClient(**kwargs)``, sharing one TLS context."""
    return httpx.AsyncClient(verify=_tls(), **kwargs)
