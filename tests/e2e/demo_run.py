"""What the shared demo run (``conftest.demo_run``) gives the tests that read it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SEED = 2025  # the demo's default
MESSAGES = 3000  # the demo's default


@dataclass(frozen=True)
class DemoRun:
    returncode: int
    out: str
    workdir: Path | None  # where its processes' logs are, if it said
