"""The sandbox NHS App key pair the tests sign with."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from appfirst.providers.auth import generate_private_key_pem


@cache
def _pem() -> bytes:
    # Making an RSA key costs 50 to 200 ms of CPU; a test process starts dozens of stacks,
    # each with a key file of its own, and none of them needs a key no other stack has.
    return generate_private_key_pem()


def sandbox_key(path: Path) -> Path:
    """``path`` holding this test process's sandbox key (as ``ensure_sandbox_key`` would
    make one), unless a key is there already."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_pem())
        os.chmod(path, 0o600)
    return path
