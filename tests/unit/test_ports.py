"""Ports for child processes are handed out once across processes, and a listener is told
apart from another process's on the same port (a CI run once froze a broker that was not
the worker's: its port had gone to another test process's listener)."""

from __future__ import annotations

import multiprocessing
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from appfirst import ports


@pytest.fixture(autouse=True)
def own_claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_claims_path", lambda: tmp_path / "claims.json")


def _hand_out(path: str, count: int, out: Any, done: Any) -> None:
    ports._claims_path = lambda: Path(path)  # type: ignore[method-assign]
    out.put([ports.free_port() for _ in range(count)])
    done.wait(60)  # alive until both have drawn: a claim lasts as long as its process


def test_two_processes_are_never_handed_the_same_port(tmp_path: Path) -> None:
    # Binding to port 0 alone hands a just-closed port out again: within this many, the
    # kernel repeats itself without the claims (13 in 600 when measured).
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    done = context.Event()
    procs = [
        context.Process(target=_hand_out, args=(str(tmp_path / "claims.json"), 300, out, done))
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    handed = out.get(timeout=60) + out.get(timeout=60)
    done.set()
    for proc in procs:
        proc.join(timeout=10)
    assert len(handed) == 600
    assert len(set(handed)) == 600


def test_a_claim_ends_with_its_process(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    done = context.Event()
    done.set()
    proc = context.Process(target=_hand_out, args=(str(tmp_path / "claims.json"), 3, out, done))
    proc.start()
    theirs = out.get(timeout=60)
    proc.join(timeout=10)
    mine = ports.free_port()
    with ports._claims() as live:
        assert not set(map(str, theirs)) & set(live)  # dropped: their process is gone
        assert str(mine) in live  # kept: this one lives


def test_a_claim_ends_so_ports_are_not_used_up(monkeypatch: pytest.MonkeyPatch) -> None:
    first = ports.free_port()
    monkeypatch.setattr(ports, "CLAIM_SECONDS", 0.0)
    ports.free_port()  # prunes every claim
    with ports._claims() as live:
        assert str(first) not in live


def test_a_claims_file_cut_short_is_started_again(tmp_path: Path) -> None:
    for broken in ('{"123', '{"123": null}', '{"123": 5.0}', "[]"):
        (tmp_path / "claims.json").write_text(broken, encoding="utf-8")
        assert ports.free_port() > 0


def test_the_listener_is_told_apart_from_another_process() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert ports.listens(os.getpid(), port) is True
        assert ports.listens(os.getppid(), port) is False
    assert ports.listens(os.getpid(), port) is False  # closed: nobody listens
