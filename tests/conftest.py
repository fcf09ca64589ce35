"""How ``make test`` shares the tests among its processes (pytest-xdist, ``--dist
loadgroup``): processes take work units from one queue in collection order."""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith("tests/unit/") and not item.get_closest_marker("xdist_group"):
            # A unit test takes milliseconds: handed out one by one, the hand-outs cost
            # more than the tests. A module is one unit of work.
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
