"""What a persona's adapter costs the first time it is asked for: time to first token of a request whose
adapter the engine has not loaded, against the same request once it has, one persona after another, then
several new personas at once.

Run by hand on quiet cores: ``.venv/bin/python bench/adapter_loads.py``. It makes ``--personas`` personas
with random rank-16 adapters, starts one ``persona serve --no-train``, and asks each for a greedy 4-token
reply twice. The server's first adapter request also pays for what the engine sets up on first use of
LoRA, so it is given apart. Results are appended to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.many_personas import make_personas  # noqa: E402
from bench.results import RESULTS, append_section, cpu_description  # noqa: E402
from bench.serving import free_port, server_env, wait_healthy  # noqa: E402


def first_token_s(client, model: str) -> float:
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello there"}], max_tokens=4, temperature=0, stream=True
    )
    first = None
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    return first if first is not None else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--personas", type=int, default=12, help="half asked one by one, half at once")
    args = parser.parse_args()

    from openai import OpenAI

    from store.base_model import resolve_base_model

    cache = Path(os.environ.get("PERSONA_CACHE_DIR", REPO / ".cache"))
    base = resolve_base_model("bundled", cache)
    personas = Path(tempfile.mkdtemp(prefix="adapter-loads-")) / "personas"
    names = make_personas(personas, base, args.personas, 0)
    one_by_one, at_once = names[: len(names) // 2], names[len(names) // 2 :]
    port = free_port()
    env = server_env(cache, personas, port)
    logs = REPO / "bench" / "out"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "adapter-loads.log", "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--no-train"], cwd=REPO, env=env, stdout=out, stderr=out
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}/health", server)
            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="bench")
            first_token_s(client, base.id)
            base_s = statistics.median(first_token_s(client, base.id) for _ in range(3))
            pairs = [(first_token_s(client, name), first_token_s(client, name)) for name in one_by_one]
            started = time.perf_counter()
            with ThreadPoolExecutor(len(at_once)) as pool:
                together = list(pool.map(lambda name: first_token_s(client, name), at_once))
            together_s = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(timeout=60)
    cold = statistics.median(c for c, _ in pairs[1:])
    loaded = statistics.median(w for _, w in pairs)
    append_section(
        f"\n## Adapter loads, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"`bench/adapter_loads.py --personas {args.personas}` on {os.cpu_count()} cores of {cpu_description()}: "
        "time to the first token of a greedy 4-token reply, random rank-16 adapters.\n\n"
        "| request | seconds |\n| --- | --- |\n"
        f"| base model | {base_s:.3f} |\n"
        f"| the server's first adapter request (adapter read from disk, LoRA set up) | {pairs[0][0]:.3f} |\n"
        f"| a persona whose adapter is not loaded, median of {len(pairs) - 1} | {cold:.3f} |\n"
        f"| the same persona again (loaded), median of {len(pairs)} | {loaded:.3f} |\n"
        f"| {len(at_once)} personas not loaded, asked at once: slowest / all done | {max(together):.3f} / "
        f"{together_s:.3f} |\n",
        RESULTS,
    )


if __name__ == "__main__":
    main()
