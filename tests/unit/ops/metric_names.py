"""The metric names the workers expose, and the ``appfirst_`` names a PromQL text uses: an
alert or a panel on a name that does not exist shows nothing and never fires."""

from __future__ import annotations

import re
from pathlib import Path

from appfirst import telemetry

ROOT = Path(__file__).resolve().parents[3]

# What Prometheus stores for each family type. A labelled family has no samples until its
# first .labels() call, so its names come from its type rather than from its samples.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}

_NAME = re.compile(r"(?<![\w:])appfirst_[A-Za-z0-9_:]*")


def exposed() -> frozenset[str]:
    names: set[str] = set()
    for family in telemetry.registry.collect():
        if not family.name.startswith("appfirst_"):
            continue
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return frozenset(names)


def used(promql: str) -> set[str]:
    return set(_NAME.findall(promql))


def unknown(promql: str) -> set[str]:
    return used(promql) - exposed()
