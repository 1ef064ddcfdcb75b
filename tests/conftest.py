"""Fixtures shared by every tier."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.polling import wait_until

REPO = Path(__file__).resolve().parent.parent

TIER_MARKERS = ("real", "browser")
"""Tiers whose folder name is also their marker: ``-m "not real and not browser"`` runs the tiers that
need no server or browser (fast and model)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by its tier's folder, so a new module cannot forget its marker."""
    tests = REPO / "tests"
    for item in items:
        try:
            tier = item.path.relative_to(tests).parts[0]
        except ValueError:
            continue
        if tier in TIER_MARKERS:
            item.add_marker(tier)


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
        self._log = None

    def healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def warm(self) -> None:
        """``persona warm`` with the server's settings, as ``make run`` runs it before serving: the engine's
        first start compiles the model and saves it, so the server loads it instead."""
        import subprocess
        import sys

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path.with_suffix(".warm.log"), "w") as log:
            subprocess.run(
                [sys.executable, "-m", "cli.main", "warm"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )

    def start(self, timeout: float = 600.0) -> None:
        import subprocess
        import sys

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")  # noqa: SIM115 (the server writes to it until stop())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve"],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        process = self.process
        try:
            wait_until(
                lambda: process.poll() is not None or self.healthy(), timeout, f"a healthy server (see {self.log_path})"
            )
        except AssertionError:
            self.stop()
            raise
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {self.log_path}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except Exception:
                self.process.kill()
        if self._log is not None:
            self._log.close()
            self._log = None


def persona_name_for(test_name: str, suffix: str = "") -> str:
    """A persona name that belongs to one test (``test_errors_show[x]`` -> ``errors-show-x-<hash>``),
    so tests that add personas to the shared store never meet each other's."""
    import hashlib
    import re

    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower().removeprefix("test_")).strip("-")[:40]
    digest = hashlib.sha1(f"{test_name}/{suffix}".encode()).hexdigest()[:6]
    return "-".join(part for part in (slug, suffix, digest) if part)


@pytest.fixture(scope="session")
def live_personas(tmp_path_factory, base_model) -> Path:
    """A personas folder for the shared server: copies of the example personas, no adapters, served
    from their cards for the whole run (tests that train use personas of their own)."""
    import shutil

    root = tmp_path_factory.mktemp("live") / "personas"
    shutil.copytree(REPO / "personas", root, ignore=shutil.ignore_patterns("adapters", "README.md"))
    for persona in root.iterdir():
        logs_already_seen(persona)
    return root


def logs_already_seen(persona: Path) -> None:
    """Record the persona's logs as trained on, so the server serves it from its card and does not
    train it by itself: the shared store stays as the tests left it until a test changes some logs."""
    from store.fingerprint import logs_fingerprint, write_seen

    write_seen(persona, logs_fingerprint(persona / "logs"))


@pytest.fixture(scope="session")
def live_server(live_personas: Path, cache_dir: Path, base_model):
    """One real server (vLLM on the bundled model) shared by the real and browser tiers, started as ``make
    run`` starts one: after ``persona warm`` (tests/real/test_compile_cache.py).

    Its worker takes the jobs tests queue, but nothing trains by itself: a persona copied in by one
    test must not start a run that another test's timing or replies would depend on. The living
    service's own tests start a server with the defaults (tests/real/test_living_service.py)."""
    server = LiveServer(live_personas, cache_dir, ARTIFACTS / f"server-{os.getpid()}.log")
    server.env["PERSONA_AUTO_TRAIN"] = "false"
    server.warm()
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def own_persona(live_server, request):
    """Make persona folders in the shared server's store that belong to this test alone: named after
    it (:func:`persona_name_for`), removed after the test; empty, or a copy of an example persona
    served from its card (its logs recorded as seen, so the server does not train it by itself)."""
    import shutil

    made: list[Path] = []

    def make(suffix: str = "", copy_of: str | None = None) -> Path:
        folder = live_server.personas_dir / persona_name_for(request.node.name, suffix)
        if copy_of:
            shutil.copytree(live_server.personas_dir / copy_of, folder, ignore=shutil.ignore_patterns("adapters"))
            logs_already_seen(folder)
        else:
            (folder / "logs").mkdir(parents=True)
        made.append(folder)
        return folder

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)
