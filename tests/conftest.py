"""The order tests are handed out in: the slowest first.

``make test`` runs four processes (pytest-xdist, ``--dist loadgroup``), each taking the next
test from one queue in collection order. A crash scenario of two minutes taken last would
run alone at the end while the other processes stand idle; started first, the short tests
fill in around it. ``@pytest.mark.slow(seconds)`` says about how long a test takes alone
(from ``--durations``); the demo's group is handed out first anyway (xdist hands out the
largest group first)."""

from __future__ import annotations

import pytest


def _seconds(item: pytest.Item) -> float:
    mark = item.get_closest_marker("slow")
    return float(mark.args[0]) if mark and mark.args else 0.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: -_seconds(item))  # stable: the rest keep their order
