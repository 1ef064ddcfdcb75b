"""The living service, timed: start-up to first reply, a dropped persona to its first adapter reply,
and chat latency with and without a training run on the same machine.

Run by hand on a quiet machine (it trains one example persona with the default recipe, several
minutes): ``.venv/bin/python bench/living_service.py [--persona zeph] [--max-steps N]``. The results
are appended to ``bench/RESULTS.md``.

1. ``persona serve`` on a personas folder holding the example personas without adapters: seconds
   until the API gives its first reply and the chat page answers.
2. The logs of an example persona copied, one file at a time, into a new persona folder of the
   running server: seconds from the last file landing to the job training, to the first reply from
   its new adapter (live on its held-out perplexity) and to its whole fidelity report with the
   gate's decision, with the status the API showed on the way.
3. Streaming chat latency (time to first token, time per output token; median and 95th percentile)
   for one user and for 8 users, with no training running and while the persona trains
   (``--drop-only`` leaves it out, so nobody chats while the persona trains: a user waiting for it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results import append_section  # noqa: E402

PROMPTS = [
    "Tell me about your day.",
    "What do you think of the weather?",
    "Any advice for me?",
    "What makes you laugh?",
    "Where would you go on holiday?",
    "What's your favourite food?",
    "How do you relax?",
    "Tell me a secret.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def start_server(personas: Path, port: int, log: Path, env_extra: dict[str, str]) -> subprocess.Popen:
    env = {
        **os.environ,
        "PERSONA_PERSONAS_DIR": str(personas),
        "PERSONA_PORT": str(port),
        "PERSONA_CACHE_DIR": os.environ.get("PERSONA_CACHE_DIR", str(REPO / ".cache")),
        **env_extra,
    }
    return subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "persona"), "serve"], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT
    )


def first_reply_s(client, model: str, started: float, timeout: float = 600, version: str | None = None) -> float:
    """Seconds from ``started`` to a reply from ``model`` (from its adapter ``version`` when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
            )
            if version is None or reply.system_fingerprint == version:
                return time.monotonic() - started
        except Exception:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"no reply from {model} {version or ''} within {timeout} s")


async def one_stream(client, model: str, prompt: str, max_tokens: int) -> tuple[float, float]:
    """(time to first token, seconds per output token after it) of one streamed reply."""
    started = time.perf_counter()
    first = None
    tokens = 0
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0.8,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter() - started
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    total = time.perf_counter() - started
    first = first if first is not None else total
    return first, (total - first) / max(1, tokens - 1)


async def latency(base_url: str, model: str, users: int, rounds: int, max_tokens: int = 64) -> dict[str, float]:
    from openai import AsyncOpenAI

    ttft, tpot = [], []
    async with AsyncOpenAI(base_url=base_url, api_key="bench") as client:
        for round_ in range(rounds):
            results = await asyncio.gather(
                *(one_stream(client, model, PROMPTS[(round_ + u) % len(PROMPTS)], max_tokens) for u in range(users))
            )
            ttft += [r[0] for r in results]
            tpot += [r[1] for r in results]

    def p95(values: list[float]) -> float:
        return sorted(values)[max(0, int(round(0.95 * len(values))) - 1)]

    return {
        "ttft_median": statistics.median(ttft),
        "ttft_p95": p95(ttft),
        "tpot_median": statistics.median(tpot),
        "tpot_p95": p95(tpot),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persona", default="zeph", help="example persona whose logs are dropped in")
    parser.add_argument(
        "--personas-dir",
        type=Path,
        default=REPO / "personas",
        help="where that persona is (bench/public_persona.py --out DIR builds a large one); only its logs are dropped",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="cap the training run (default: the recipe's)")
    parser.add_argument(
        "--yield-share",
        type=float,
        default=None,
        help="the server's --train-yield-share (default: its own; 1 = training never pauses for chat)",
    )
    parser.add_argument("--drop-only", action="store_true", help="time the drop alone, without chat latency")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (the server's log, the personas)")
    args = parser.parse_args()
    from openai import OpenAI

    work = Path(tempfile.mkdtemp(prefix="living-bench-"))
    personas = work / "personas"
    shutil.copytree(REPO / "personas", personas, ignore=shutil.ignore_patterns("adapters", ".*"))  # not the queue
    source = args.personas_dir / args.persona
    source_logs = sorted((source / "logs").iterdir())
    shutil.rmtree(personas / args.persona, ignore_errors=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    client = OpenAI(base_url=base_url, api_key="bench")
    # The other example personas would train first; the drop is what is timed, so only it trains.
    env = {"PERSONA_AUTO_TRAIN": "true"}
    if args.yield_share is not None:
        env["PERSONA_TRAIN_YIELD_SHARE"] = str(args.yield_share)
    for other in personas.iterdir():
        if other.is_dir() and other.name != args.persona:
            shutil.rmtree(other / "logs")
    chatted = "corvin" if args.persona == "wren" else "wren"  # a card persona that other users chat with
    started = time.monotonic()
    server = start_server(personas, port, work / "server.log", env)
    rows: list[str] = []
    try:
        startup = first_reply_s(client, chatted, started)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui", timeout=30) as page:
            page_ok = page.status == 200
        rows.append(f"| `persona serve` start to first API reply (card persona) | {startup:.1f} s |")
        rows.append(f"| chat page answers | {'yes' if page_ok else 'no'} |")
        idle = (
            {}
            if args.drop_only
            else {users: asyncio.run(latency(base_url, chatted, users, rounds=3)) for users in (1, 8)}
        )

        if args.max_steps:
            (personas / args.persona).mkdir()
            (personas / args.persona / "persona.yaml").write_text(f"training:\n  max_steps: {args.max_steps}\n")
        logs = personas / args.persona / "logs"
        logs.mkdir(parents=True)
        for path in source_logs:  # a slow copy, a file (or an export's folder) at a time
            (shutil.copytree if path.is_dir() else shutil.copyfile)(path, logs / path.name)
            time.sleep(1.0)
        landed = time.monotonic()
        seen, busy, speed, marks, drop = [], {}, None, {}, None
        while True:
            status = get_json(f"{base_url}/personas/{args.persona}")
            label = status.get("status")
            speed = (status.get("training") or {}).get("tokens_per_s") or speed
            if not seen or seen[-1] != label:
                seen.append(label)
                marks.setdefault(label, time.monotonic() - landed)
            if label == "training" and not busy and not args.drop_only:
                busy = {users: asyncio.run(latency(base_url, chatted, users, rounds=2)) for users in (1, 8)}
            if status.get("live_version") and drop is None:
                drop = first_reply_s(client, args.persona, landed, version=status["live_version"])
            if label == "trained" and drop is not None:
                break
            if label == "failed" or time.monotonic() - landed > 3600:
                raise RuntimeError(f"training failed: {status}")
            time.sleep(1.0)
        settled = time.monotonic() - landed
        [version] = status["versions"]
        metadata = json.loads((personas / args.persona / "adapters" / version["version"] / "metadata.json").read_text())
        rows.append(f"| last log file landed to the job training | {marks.get('training', 0):.1f} s |")
        rows.append(f"| training in the worker (steps and evaluations) | {metadata['duration_s']:.1f} s |")
        rows.append(f"| last log file landed to first reply from the new adapter | {drop:.1f} s |")
        rows.append(f"| last log file landed to its whole fidelity report and the gate's decision | {settled:.1f} s |")
        rows.append(f"| the gate's decision | {(version.get('gate') or {}).get('status')} |")
        rows.append(f"| statuses seen | {' -> '.join(seen)} |")
        rows.append(f"| training speed in the worker, chat latency measured meanwhile | {speed or 0:.0f} tokens/s |")
    finally:
        server.terminate()
        server.wait(timeout=60)
    table = [
        "| case | users | TTFT median | TTFT p95 | s/token median | s/token p95 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, figures in (("no training", idle), ("while training", busy)):
        for users, f in figures.items():
            table.append(
                f"| {name} | {users} | {f['ttft_median']:.2f} s | {f['ttft_p95']:.2f} s | "
                f"{f['tpot_median']:.3f} | {f['tpot_p95']:.3f} |"
            )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    append_section(
        f"\n## Living service, {when}\n`bench/living_service.py --persona {args.persona}"
        f"{'' if args.personas_dir == REPO / 'personas' else f' --personas-dir {args.personas_dir}'}"
        f"{f' --max-steps {args.max_steps}' if args.max_steps else ''}"
        f"{f' --yield-share {args.yield_share}' if args.yield_share is not None else ''}"
        f"{' --drop-only' if args.drop_only else ''}`"
        f" on {os.cpu_count()} cores.\n\n"
        "| measure | value |\n| --- | --- |\n"
        + "\n".join(rows)
        + ("" if args.drop_only else "\n\nChat latency (64-token replies from a card persona):\n\n" + "\n".join(table))
        + "\n"
    )
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
