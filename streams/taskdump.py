"""``kill -USR1 <worker pid>``: log where every asyncio task is waiting (streams/worker.py).

A stream processor that stops making progress without crashing shows nothing in a thread
dump (the loop idles in ``select``); the answer is in which ``await`` each task sits on.
Only function names, files and line numbers are logged, never a local variable, so no
personal data can leak into the log.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from types import FrameType
from typing import Any

log = logging.getLogger("appfirst.streams")

MAX_DEPTH = 40


def awaiting(obj: Any) -> list[str]:
    """The chain of frames an awaitable is suspended in, outermost first."""
    chain: list[str] = []
    for _ in range(MAX_DEPTH):
        if obj is None:
            break
        if isinstance(obj, asyncio.Task):  # awaiting another task: follow it
            chain.append(f"[{_name(obj)}]")
            obj = obj.get_coro()
            continue
        frame: FrameType | None = (
            getattr(obj, "cr_frame", None)
            or getattr(obj, "ag_frame", None)
            or getattr(obj, "gi_frame", None)
        )
        if frame is not None:
            code = frame.f_code
            chain.append(f"{code.co_name} ({_short(code.co_filename)}:{frame.f_lineno})")
        nxt = (
            getattr(obj, "cr_await", None)
            or getattr(obj, "ag_await", None)
            or getattr(obj, "gi_yieldfrom", None)
        )
        if frame is None and nxt is None:
            # ``await actor`` (a Faust agent) awaits a bare ``coroutine_wrapper``, ``async
            # for`` an ``async_generator_asend`` and ``await task`` a ``FutureIter``: only
            # the garbage collector sees the coroutine, generator or task inside.
            nxt = next((r for r in gc.get_referents(obj) if _suspended(r)), None)
        if nxt is None and isinstance(obj, asyncio.Future) and not obj.done():
            chain.append(f"<{type(obj).__name__} pending>")
        obj = nxt
    return chain


def _suspended(obj: Any) -> bool:
    frames = ("cr_frame", "ag_frame", "gi_frame")
    return isinstance(obj, asyncio.Task) or any(hasattr(obj, a) for a in frames)


def _short(path: str) -> str:
    for marker in ("site-packages/", "appfirst/", "streams/"):
        if marker in path:
            return path.rsplit(marker, 1)[1]
    return path.rsplit("/", 1)[-1]


def _name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or task.get_name()


def dump_tasks() -> int:
    """Log one line per unfinished task; returns how many."""
    tasks = [t for t in asyncio.all_tasks() if not t.done()]
    for task in sorted(tasks, key=_name):
        chain = awaiting(task.get_coro())
        log.warning(
            "task %s awaiting: %s",
            _name(task),
            " -> ".join(chain) or "?",
            extra={"task": _name(task), "stack": chain},
        )
    return len(tasks)
