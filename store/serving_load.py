"""While a server is generating, a file says so, and a training worker beside it yields the CPU.

The server keeps a :class:`ServingLoad`: the file appears when its first request starts generating and
goes when the last one ends. The worker reads it with :func:`server_busy` many times a second. The file
holds the server's pid, so one left behind by a server that died reads as idle.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .files import atomic_write, pid_alive


def busy_file(cache_dir: Path) -> Path:
    """This server's busy file: one per server process, so servers sharing a cache never mix theirs."""
    return Path(cache_dir) / "serving" / f"{os.getpid()}.busy"


class ServingLoad:
    """The server's side: counts the requests generating now; used from the event loop only."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.running = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clear()

    def started(self) -> None:
        self.running += 1
        if self.running == 1:
            atomic_write(self.path, str(os.getpid()))

    def finished(self) -> None:
        self.running = max(0, self.running - 1)
        if self.running == 0:
            self._clear()

    @contextlib.contextmanager
    def generating(self) -> Iterator[None]:
        self.started()
        try:
            yield
        finally:
            self.finished()

    def close(self) -> None:
        self.running = 0
        self._clear()

    def _clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def server_busy(path: Path) -> bool:
    """The worker's side: is the server that owns ``path`` generating now?"""
    try:
        pid = int(Path(path).read_text() or "0")
    except (FileNotFoundError, ValueError):
        return False
    return pid > 0 and pid_alive(pid)
