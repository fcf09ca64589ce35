"""appfirst's router alone: the worker as in production (``appfirst worker``), with only
the routing agents (and the health and metrics pages the bench waits on) loaded, so that
routing is measured against ``bench/plain_router.py`` on the same load with nothing else
reading ``dispatches``.

Run as ``python -m bench.routing_worker``, with the worker's settings in the environment.
"""

from __future__ import annotations

import sys

from appfirst.streams import worker

MODULES = ("router", "health", "exporter")

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker"]  # Faust's own command line
    worker.run(MODULES)
