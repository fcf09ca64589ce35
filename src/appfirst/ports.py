"""Free loopback ports for child processes (the broker, workers, the simulator), each handed
out once across every process on this machine.

A port is found free by binding to port 0 and closing; the child binds it later. In that
gap another process (a second test process, the demo) can be handed the same port: one
child then fails to bind, and whoever waits for the port finds the other's listener, so a
test talks to a broker or worker that is not its own. A claims file, locked while read
and written, keeps a port handed out for as long as the process it was handed to lives
(a test restarts a killed worker on the same port, minutes later), and at most
``CLAIM_SECONDS``.
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

CLAIM_SECONDS = 86_400.0
ATTEMPTS = 50


def _claims_path() -> Path:
    return Path(tempfile.gettempdir()) / f"appfirst-ports-{os.getuid()}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's: alive
    return True


@contextlib.contextmanager
def _claims() -> Iterator[dict[str, list[float]]]:
    """The live claims (port -> [pid it was handed to, when]), locked against other
    processes; what the caller leaves in the dict is written back."""
    with open(_claims_path(), "a+", encoding="utf-8") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            file.seek(0)
            try:
                held = {
                    k: [int(v[0]), float(v[1])] for k, v in json.loads(file.read() or "{}").items()
                }
            except (ValueError, AttributeError, TypeError, IndexError, KeyError):
                held = {}  # a file cut short, or of another layout: start again
            now = time.time()
            live = {
                port: claim
                for port, claim in held.items()
                if now - claim[1] < CLAIM_SECONDS and _alive(int(claim[0]))
            }
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
    """A port nothing listens on and no live process here was handed."""
    with _claims() as live:
        for _ in range(ATTEMPTS):
            port = _unbound(host)
            if str(port) not in live:
                live[str(port)] = [os.getpid(), time.time()]
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
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except PermissionError:
        return None  # hidepid or ptrace limits: cannot be told
    except OSError:
        return False  # gone
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(fd) in wanted:
                return True
    return False
