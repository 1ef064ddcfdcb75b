"""Fixtures shared by every tier."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Where the converted base model is cached; the Makefile and tests share it."""
    return Path(os.environ.get("PERSONA_CACHE_DIR", REPO / ".cache")).resolve()


@pytest.fixture(scope="session")
def base_model(cache_dir: Path):
    """The bundled SmolLM2 as a safetensors folder (converted once, then reused)."""
    from store.base_model import resolve_base_model

    return resolve_base_model("bundled", cache_dir)


ARTIFACTS = REPO / "test-artifacts"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """``persona serve`` running in a child process, as a user starts it."""

    def __init__(self, personas_dir: Path, cache_dir: Path, log_path: Path) -> None:
        self.personas_dir = personas_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "PERSONA_PERSONAS_DIR": str(personas_dir),
            "PERSONA_CACHE_DIR": str(cache_dir),
            "PERSONA_PORT": str(self.port),
            "PERSONA_MAX_MODEL_LEN": "1024",
            "PYTHONUNBUFFERED": "1",
        }
        self.process = None

    def start(self, timeout: float = 300.0) -> None:
        import subprocess
        import sys
        import time
        import urllib.request

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve"], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"server not healthy after {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except Exception:
                self.process.kill()


@pytest.fixture(scope="session")
def live_personas(tmp_path_factory, base_model) -> Path:
    """A personas folder for the shared server: copies of the example personas (no adapters)."""
    import shutil

    root = tmp_path_factory.mktemp("live") / "personas"
    shutil.copytree(REPO / "personas", root, ignore=shutil.ignore_patterns("adapters", "README.md"))
    return root


@pytest.fixture(scope="session")
def live_server(live_personas: Path, cache_dir: Path, base_model):
    """One real server (vLLM on the bundled model) shared by the real and browser tiers."""
    server = LiveServer(live_personas, cache_dir, ARTIFACTS / "server.log")
    server.start()
    yield server
    server.stop()
