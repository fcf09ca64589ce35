"""The embedded broker is the one its caller talks to: a port another process took first
is an error, not a broker that belongs to someone else."""

from __future__ import annotations

import socket

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
