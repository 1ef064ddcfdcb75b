"""The first start, timed: the engine's start-up with an empty compile cache, again with the cache that
start left, and ``persona serve`` to its first reply after ``persona warm``.

Run by hand on a quiet machine: ``.venv/bin/python bench/first_start.py``. It uses fresh compile caches of
its own, torch's and the engine's (the machine's are untouched), and appends the figures to
``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.living_service import first_reply_s, free_port  # noqa: E402
from bench.results import append_section, cpu_description  # noqa: E402

PERSONA = str(REPO / ".venv" / "bin" / "persona")


def timed_warm(env: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    run = subprocess.run([PERSONA, "warm"], env=env, capture_output=True, text=True, check=True)
    return time.monotonic() - started, run.stdout.strip().splitlines()[-1]


def serve_to_first_reply(env: dict[str, str], personas: Path) -> float:
    from openai import OpenAI

    port = free_port()
    server_env = {
        **env,
        "PERSONA_PORT": str(port),
        "PERSONA_PERSONAS_DIR": str(personas),
        "PERSONA_TRAIN": "false",
        "PERSONA_AUTO_TRAIN": "false",  # the example personas' folder is read, never given jobs
    }
    started = time.monotonic()
    server = subprocess.Popen([PERSONA, "serve"], env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="bench")
        return first_reply_s(client, "wren", started)
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="first-start-"))
    env = {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"),
        "VLLM_CACHE_ROOT": str(work / "engine"),
        "PERSONA_CACHE_DIR": os.environ.get("PERSONA_CACHE_DIR", str(REPO / ".cache")),
        "PERSONA_UI": "false",
    }
    cold, cold_line = timed_warm(env)
    warm, warm_line = timed_warm(env)
    serve = serve_to_first_reply(env, REPO / "personas")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    append_section(
        f"\n## First start, {when}\n`bench/first_start.py` on {os.cpu_count()} cores of {cpu_description()} "
        "(fresh compile caches; each `persona warm` is a new process that starts the engine, answers 4 greedy "
        "tokens, stops).\n\n"
        "| step | seconds | what it said |\n| --- | --- | --- |\n"
        f"| `persona warm`, empty compile cache (what `make run` adds to the set-up, once) | {cold:.0f} | "
        f"{cold_line} |\n"
        f"| `persona warm` again, the cache it left | {warm:.0f} | {warm_line} |\n"
        f"| then `persona serve` to its first reply (card persona) | {serve:.0f} | |\n"
    )


if __name__ == "__main__":
    main()
