"""``appfirst broker``: prints its address, serves Kafka, stops cleanly on a signal."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_broker_serves_and_stops_on_a_signal(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "appfirst", "broker"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("broker listening: kafka://127.0.0.1:")
    port = int(line.rsplit(":", 1)[1])

    async def topics() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
        await admin.start()
        try:
            return list(await admin.list_topics())
        finally:
            await admin.close()

    assert isinstance(asyncio.run(topics()), list)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "broker stopped" in out
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
