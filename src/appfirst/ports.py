"""Free loopback ports for child processes (the broker, workers, the simulator), each handed
out once across every process on this machine.

A port is found free by binding to port 0 and closing; the child binds it later. In that
gap another process (a second test process, the demo) can be handed the same port: one
child then fails to bind, and whoever waits for the port finds the other's listener, so a
test talks to a broker or worker that is not its own. A claims file, locked while read
and written, keeps a port handed out for ``CLAIM_SECONDS``, long enough for any child to
have bound it; after that the kernel itself no longer offers a port that is listened on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CLAIM_SECONDS = 120.0
ATTEMPTS = 50


def _claims_path() -> Path:
    return Path(tempfile.gettempdir()) / f"appfirst-ports-{os.getuid()}.json"


@contextlib.contextmanager
def _claims() -> Iterator[dict[str, float]]:
    """The live claims (port -> when handed out), locked against other processes; what the
    caller leaves in the dict is written back."""
    with open(_claims_path(), "a+", encoding="utf-8") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            file.seek(0)
            try:
                held = {k: float(v) for k, v in json.loads(file.read() or "{}").items()}
            except (ValueError, AttributeError):  # a file cut short: start again
                held = {}
            now = time.time()
            live = {port: at for port, at in held.items() if now - at < CLAIM_SECONDS}
            yield live
            file.seek(0)
            file.truncate()
            file.write(json.dumps(live))
            file.flush()
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def _unbound(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on and no process here was handed in the last two minutes."""
    with _claims() as live:
        for _ in range(ATTEMPTS):
            port = _unbound(host)
            if str(port) not in live:
                live[str(port)] = time.time()
                return port
    raise RuntimeError(f"no unclaimed port in {ATTEMPTS} tries")


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as file:
            next(file)
            for line in file:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    return inodes


def listens(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds the socket listening on ``port``: None where this
    cannot be told (no ``/proc``)."""
    if not Path("/proc/net/tcp").exists():
        return None
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in wanted:
                    return True
    return False
