"""One run of the demo as a newcomer runs it, shared by the tests that read its output
(``test_demo.py``) and its logs (``test_logs_pii.py``): at about two and a half minutes a
run, the suite pays for it once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.demo_run import DemoRun


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    """``appfirst demo`` with its defaults; logs at info, so that every fallback is logged
    by message id for the personal-data check."""
    env = {**os.environ, "COLUMNS": "120", "TERM": "dumb", "APPFIRST_LOG_LEVEL": "info"}
    proc = subprocess.run(
        [sys.executable, "-m", "appfirst", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path_factory.mktemp("demo"),
        timeout=420,
        check=False,
    )
    where = re.search(r"logs in (\S+)", proc.stdout)
    workdir = Path(where.group(1)) if where else None
    try:
        yield DemoRun(proc.returncode, proc.stdout, workdir)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
