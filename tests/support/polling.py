"""Waiting on a condition instead of sleeping: tests say what they wait for and fail naming it.

A fixed sleep is either too short on a loaded machine (the test fails for no reason) or too long
everywhere else. Each test polls the observable event it needs (a counter moved, a status changed,
a later marker was seen) and gives a deadline that only a real fault reaches. The condition is asked
one last time at the deadline, so a slow poll never fails a condition that did come true.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_until", "wait_until_async"]

T = TypeVar("T")

What = str | Callable[[], str]
"""What is awaited, for the failure message; a callable is asked at the deadline (to show the last state)."""


def _timed_out(what: What, timeout: float) -> AssertionError:
    text = what() if callable(what) else what
    return AssertionError(f"timed out after {timeout:g} s waiting for {text}")


def wait_until(
    condition: Callable[[], T], timeout: float = 30.0, what: What = "the condition", every: float = 0.1
) -> T:
    """Call ``condition`` until it returns something true, and return that; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        late = time.monotonic() >= deadline
        result = condition()
        if result:
            return result
        if late:
            raise _timed_out(what, timeout)
        time.sleep(every)


async def wait_until_async(
    condition: Callable[[], T], timeout: float = 30.0, what: What = "the condition", every: float = 0.05
) -> T:
    """:func:`wait_until` for a test running on an event loop: the loop keeps running while it waits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        late = loop.time() >= deadline
        result = condition()
        if result:
            return result
        if late:
            raise _timed_out(what, timeout)
        await asyncio.sleep(every)
