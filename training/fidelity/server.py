"""A server to evaluate through when none is running: ``persona serve`` as a child process.

The training side never imports the serving code; it starts the same command a user runs, on a free
loopback port with the same personas folder, base model and cache, and stops it afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from store.settings import StoreSettings

from .settings import FidelityError

__all__ = ["serve_env", "served"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FidelityError(f"the server exited with {process.returncode} while starting; {log}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise FidelityError(f"the server was not ready after {timeout:.0f} s; {log}:\n{_tail(log)}")


def serve_env(settings: StoreSettings, port: int) -> dict[str, str]:
    """The environment of ``persona serve`` for an evaluation: this process's store settings, handed on
    as the server reads them, on a loopback port, with no page and no training."""
    store = StoreSettings(**{name: getattr(settings, name) for name in StoreSettings.model_fields})
    return store.child_env() | {
        "PERSONA_HOST": "127.0.0.1",
        "PERSONA_PORT": str(port),
        "PERSONA_UI": "false",
        "PERSONA_TRAIN": "false",
        "PERSONA_AUTO_TRAIN": "false",
    }


@contextmanager
def served(
    settings: StoreSettings,
    *,
    timeout: float = 600.0,
    say: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> Iterator[str]:
    """Start ``persona serve`` for ``settings``' personas folder; yields its API root (``.../v1``)."""
    port = _free_port()
    env = serve_env(settings, port)
    handle, name = tempfile.mkstemp(prefix="persona-eval-serve-", suffix=".log")
    log = Path(name)
    root = f"http://127.0.0.1:{port}"
    say(f"starting persona serve on {root} for the evaluation (log: {log})")
    with os.fdopen(handle, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_healthy(root, process, log, timeout)
        yield root + "/v1"
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    log.unlink(missing_ok=True)
