"""The embedded broker is the one its caller talks to: a port another process took first
is an error, not a broker that belongs to someone else. And its binary can be run by every
process that asks for it at once, on a machine that has never run it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from appfirst.broker import EmbeddedBroker

pytestmark = pytest.mark.integration


def test_a_port_another_process_listens_on_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = EmbeddedBroker(taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="another process listens"):
            broker.start()
        assert broker.process is None  # stopped, not left behind


# Each process asks for the binary after a random pause of up to 0.3 s (so copies
# overlap rather than queue), then runs it repeatedly: a run between another process's
# replacement of the file and its chmod fails with EACCES.
RUN_IT = """
import random, subprocess, time
time.sleep(random.random() * 0.3)
from appfirst.broker import broker_binary
path = str(broker_binary())
for _ in range(20):
    subprocess.run([path, "--version"], check=True, capture_output=True)
"""


def test_processes_starting_at_once_on_a_new_machine_can_all_run_the_broker(
    tmp_path: Path,
) -> None:
    # Without the lock, 9 of 40 such processes failed (five rounds of eight).
    for round_ in range(3):
        home = tmp_path / f"home{round_}"  # no ~/.calfkit yet: the binary is copied out
        home.mkdir()
        env = {**os.environ, "HOME": str(home)}
        env.pop("CALF_TANSU_BIN", None)
        procs = [
            subprocess.Popen([sys.executable, "-c", RUN_IT], env=env, stderr=subprocess.PIPE)
            for _ in range(8)
        ]
        errors = [p.communicate(timeout=120)[1].decode()[-300:] for p in procs]
        failed = [e for p, e in zip(procs, errors, strict=True) if p.returncode != 0]
        assert not failed, failed
