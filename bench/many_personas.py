"""Many personas on one server: throughput, first-token latency and listing latency by personas in use.

Run by hand on quiet cores: ``.venv/bin/python bench/many_personas.py`` (1,000 personas, 16
streaming clients). It makes N personas with random rank-16 adapters (one generated with PEFT, the
others random tensors of the same shapes, or copies of the first ``--distinct`` ones to save disk),
starts one ``persona serve`` without training, and for each row (the base model, then requests
spread over the first W personas, then, with ``--pinned N``, every persona with half the requests
to the last N, whose cards pin them: a site's featured personas) runs ``--clients`` streaming clients
for ``--seconds``, each asking a random model of the row for a reply of ``--tokens`` tokens with the
same sampling (temperature 0.8, top_p 1.0 or ``--top-p``, a seed per request). While the clients run, ``/v1/models`` and
``/v1/personas`` are listed once a second. Results are printed and appended to
``bench/RESULTS.md``; ``--no-append`` only prints (a smoke run:
``--personas 20 --clients 2 --seconds 10 --no-append``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.random_adapter import publish_random_adapter  # noqa: E402
from bench.results import RESULTS, append_section, cpu_description  # noqa: E402
from bench.serving import PROMPTS, free_port, server_env, wait_healthy  # noqa: E402
from service.lora_cpu import ADAPTER_WEIGHTS  # noqa: E402
from store.adapters import STORED_DTYPE  # noqa: E402

TEMPERATURE = 0.8
"""The same on every row, whatever the cards say (and ``--top-p``, 1.0 unless asked)."""

SETTLED_S = 5.0
"""A row's first requests all start at once and meet adapters never loaded; the settled first-token
figures leave out the requests started in this many seconds, so a cold start and a steady tail are told apart."""


@dataclass
class Row:
    label: str
    tokens: int = 0
    seconds: float = 0.0
    first_token: list[float] = field(default_factory=list)
    settled_first_token: list[float] = field(default_factory=list)
    """First-token times of the requests started after the row's first ``SETTLED_S`` seconds."""
    began: float = 0.0
    listings: dict[str, list[float]] = field(default_factory=lambda: {"models": [], "personas": []})
    errors: int = 0
    loads: float = 0.0
    evictions: float = 0.0
    pinned_first_token: list[float] = field(default_factory=list)
    """First-token times of the requests to pinned personas (the row that sends them half its requests)."""
    other_first_token: list[float] = field(default_factory=list)
    pinned_now: float = 0.0

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def adapter_counts(base_url: str) -> tuple[float, float, float]:
    """Adapter loads and evictions so far and adapters pinned now, from the server's ``/metrics``."""
    import httpx

    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=60).text
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("persona_adapter_loads_total", "persona_adapter_evictions_total", "persona_adapters_pinned"):
            found[name] = float(value)
    return (
        found.get("persona_adapter_loads_total", 0.0),
        found.get("persona_adapter_evictions_total", 0.0),
        found.get("persona_adapters_pinned", 0.0),
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def make_personas(root: Path, base, count: int, distinct: int, float32_files: bool, pinned: int) -> list[str]:
    """``count`` personas with random adapters, written as training publishes them (or in float32),
    the last ``pinned`` of them pinned by their cards; after the first ``distinct``, weights are copied."""
    import torch
    from safetensors.torch import load_file, save_file

    from store.adapters import ADAPTER_WEIGHTS, METADATA_FILE, AdapterMetadata, as_stored, new_staging_dir, publish

    names = [f"p{i:04d}" for i in range(count)]
    template: Path | None = None
    for index, name in enumerate(names):
        folder = root / name
        (folder / "logs").mkdir(parents=True)
        (folder / "persona.yaml").write_text(
            f"display_name: Persona {index}\nsystem_prompt: You are a helpful assistant.\n"
            + ("serving: {pinned: true}\n" if index >= count - pinned else "")
        )
        if template is None:
            version = publish_random_adapter(folder, base, seed=1000, scale=0.02, r=16, float32_file=float32_files)
            template = folder / "adapters" / f"v{version}"
            shapes = {key: tensor.shape for key, tensor in load_file(template / ADAPTER_WEIGHTS).items()}
            continue
        staged = new_staging_dir(folder)
        shutil.copy(template / "adapter_config.json", staged / "adapter_config.json")
        if distinct and index >= distinct:
            source = root / names[index % distinct] / "adapters" / "v1" / ADAPTER_WEIGHTS
            shutil.copy(source, staged / ADAPTER_WEIGHTS)
        else:
            generator = torch.Generator().manual_seed(1000 + index)
            weights = {key: torch.randn(shape, generator=generator) * 0.02 for key, shape in shapes.items()}
            if not float32_files:
                weights = {key: as_stored(weight) for key, weight in weights.items()}
            save_file(weights, str(staged / ADAPTER_WEIGHTS))
        meta = AdapterMetadata(base_model=base.id, base_hash=base.hash, data_hash=f"random-{index}")
        (staged / METADATA_FILE).write_text(meta.model_dump_json())
        publish(folder, staged)
        if (index + 1) % 100 == 0:
            print(f"  {index + 1} personas", flush=True)
    return names


async def one_reply(
    client, model: str, prompt: str, tokens: int, seed: int, top_p: float, row: Row, pinned: bool = False
) -> None:
    start = time.perf_counter()
    first = None
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=tokens,
            seed=seed,
            stream=True,
            stream_options={"include_usage": True},
            temperature=TEMPERATURE,
            top_p=top_p,
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
            if chunk.usage is not None:
                row.tokens += chunk.usage.completion_tokens
    except Exception as exc:  # counted and shown: a benchmark keeps going
        row.errors += 1
        print(f"  {model}: {exc}", flush=True)
        return
    if first is not None:
        row.first_token.append(first)
        (row.pinned_first_token if pinned else row.other_first_token).append(first)
        if start - row.began >= SETTLED_S:
            row.settled_first_token.append(first)


def lister(base_url: str, row: Row, stop: threading.Event) -> None:
    """Lists both once a second, in a thread of its own: the clients' event loop, busy with their
    streams, must not add its own delays to the listing times."""
    import httpx

    with httpx.Client(timeout=120) as http:
        while not stop.is_set():
            for key in ("models", "personas"):
                start = time.perf_counter()
                response = http.get(f"{base_url}/{key}")
                response.raise_for_status()
                row.listings[key].append(time.perf_counter() - start)
            stop.wait(1.0)


async def measure(
    base_url: str,
    label: str,
    models: list[str],
    clients: int,
    tokens: int,
    seconds: float,
    top_p: float,
    pinned: list[str] | None = None,
) -> Row:
    """``clients`` streaming clients for ``seconds``, each request to a random one of ``models``, or
    every other one to a random one of ``pinned`` (a site's featured personas) where given."""
    from openai import AsyncOpenAI

    row = Row(label)
    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=900)
    chooser = random.Random(label)
    stop = asyncio.Event()
    counter = iter(range(10**9))

    async def user(index: int) -> None:
        while not stop.is_set():
            seed = next(counter)
            prompt = PROMPTS[seed % len(PROMPTS)]
            featured = bool(pinned) and seed % 2 == 0
            model = chooser.choice(pinned if featured else models)
            await one_reply(client, model, prompt, tokens, seed, top_p, row, pinned=featured)

    listing_stop = threading.Event()
    listing = threading.Thread(target=lister, args=(base_url, row, listing_stop), daemon=True)
    listing.start()
    row.began = time.perf_counter()
    users = [asyncio.create_task(user(i)) for i in range(clients)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*users)  # replies in flight finish and count
    row.seconds = time.perf_counter() - row.began
    listing_stop.set()
    await asyncio.to_thread(listing.join)
    await client.close()
    return row


def report(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        f"\n## Many personas (bench/many_personas.py), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n",
        f"{args.personas} personas with random rank-16 adapters, one `--no-train` server, {args.clients} streaming "
        f"clients asking for {args.tokens}-token replies for {args.seconds:.0f} s per row, each to a random model "
        "of the row; adapter loads and evictions as seen at `/metrics` scrapes; "
        f"temperature {TEMPERATURE}, top_p {args.top_p} on every row; "
        f"{os.cpu_count()} cores of {cpu_description()}; adapter cache (`--max-cpu-loras`) "
        f"{args.adapter_cache} adapters ({'set' if args.max_cpu_loras else 'sized from memory'}); "
        f"adapters in one batch (`--max-loras`) {args.max_loras or 'the default'}; adapters served "
        f"from {args.adapter_weights} copies (`--adapter-weights`); adapter files in "
        f"{'float32 (`--float32-files`)' if args.float32_files else STORED_DTYPE + ' (as training publishes them)'}. "
        "Listings are timed once a second while the clients run. Settled: the requests started after the "
        f"row's first {SETTLED_S:.0f} s (its first requests start at once, on adapters never loaded).\n",
        "| W (personas in use) | output tokens/s | first token p50 / p95 | settled p50 / p95 | `/v1/models` p50 / max "
        "| `/v1/personas` p50 / max | adapter loads / evictions | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        models, personas = row.listings["models"], row.listings["personas"]
        lines.append(
            f"| {row.label} | {row.rate:.0f} | {percentile(row.first_token, 0.5):.2f} / "
            f"{percentile(row.first_token, 0.95):.2f} s | {percentile(row.settled_first_token, 0.5):.2f} / "
            f"{percentile(row.settled_first_token, 0.95):.2f} s | {percentile(models, 0.5) * 1000:.0f} / "
            f"{max(models, default=float('nan')) * 1000:.0f} ms | {percentile(personas, 0.5) * 1000:.0f} / "
            f"{max(personas, default=float('nan')) * 1000:.0f} ms | {row.loads:.0f} / {row.evictions:.0f} "
            f"| {row.errors} |"
        )
    for row in rows:
        if row.pinned_first_token:
            lines.append(
                f'\nRow "{row.label}": {row.pinned_now:.0f} adapters pinned (`persona_adapters_pinned`); first '
                f"token of the requests to pinned personas p50 / p95 {percentile(row.pinned_first_token, 0.5):.2f} / "
                f"{percentile(row.pinned_first_token, 0.95):.2f} s, of the others "
                f"{percentile(row.other_first_token, 0.5):.2f} / {percentile(row.other_first_token, 0.95):.2f} s."
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--personas", type=int, default=1000)
    parser.add_argument("--widths", default="8,64,all", help="personas in use per row, after the base-model row")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0, help="load per row")
    parser.add_argument("--top-p", type=float, default=1.0, help="every request's top_p (a card's is often 0.9)")
    parser.add_argument(
        "--max-cpu-loras", type=int, default=0, help="the server's adapter cache (0: its default, sized from memory)"
    )
    parser.add_argument("--max-loras", type=int, default=0, help="adapters in one batch (0: the server's default)")
    parser.add_argument("--distinct", type=int, default=0, help="distinct adapters (0: all); the rest are copies")
    parser.add_argument(
        "--pinned",
        type=int,
        default=4,
        help="personas whose cards pin them (the last ones), sent half the requests of a last row (0: none)",
    )
    parser.add_argument(
        "--adapter-weights",
        choices=ADAPTER_WEIGHTS,
        default=ADAPTER_WEIGHTS[0],
        help="how the server keeps adapters for its LoRA kernel (PERSONA_ADAPTER_WEIGHTS)",
    )
    parser.add_argument(
        "--float32-files",
        action="store_true",
        help="write the adapters' files in float32 (training publishes float32 weights in STORED_DTYPE)",
    )
    parser.add_argument("--no-append", action="store_true", help="print only, append nothing to RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the generated personas folder")
    args = parser.parse_args()

    from store.base_model import resolve_base_model

    cache = Path(os.environ.get("PERSONA_CACHE_DIR", REPO / ".cache"))
    base = resolve_base_model("bundled", cache)
    work = Path(tempfile.mkdtemp(prefix="persona-many-"))
    personas = work / "personas"
    print(f"making {args.personas} personas in {personas}", flush=True)
    names = make_personas(personas, base, args.personas, args.distinct, args.float32_files, args.pinned)
    widths = list(dict.fromkeys(len(names) if w == "all" else min(int(w), len(names)) for w in args.widths.split(",")))

    logs = REPO / "bench" / "out"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = server_env(cache, personas, port, PERSONA_MAX_CPU_LORAS=str(args.max_cpu_loras))
    if args.max_loras:
        env["PERSONA_MAX_LORAS"] = str(args.max_loras)
    env["PERSONA_ADAPTER_WEIGHTS"] = args.adapter_weights
    url = f"http://127.0.0.1:{port}/v1"
    rows: list[Row] = []
    with open(logs / "many-personas.log", "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--no-train"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}/health", process)
            found = re.search(r"keeping up to (\d+) adapters", (logs / "many-personas.log").read_text(errors="replace"))
            args.adapter_cache = found.group(1) if found else "?"
            plan = [("base model only", [base.id], None)] + [(str(w), names[:w], None) for w in widths]
            if args.pinned:
                plan.append((f"{len(names)}, half to {args.pinned} pinned", names, names[-args.pinned :]))
            for label, models, pinned in plan:
                print(f"row {label}", flush=True)
                before = adapter_counts(url)
                row = asyncio.run(
                    measure(url, label, models, args.clients, args.tokens, args.seconds, args.top_p, pinned)
                )
                after = adapter_counts(url)
                row.loads, row.evictions, row.pinned_now = after[0] - before[0], after[1] - before[1], after[2]
                print(f"  {row.rate:.1f} tokens/s, {len(row.first_token)} replies, {row.errors} errors", flush=True)
                rows.append(row)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    text = report(rows, args)
    if args.no_append:
        print(text)
    else:
        append_section(text, RESULTS)


if __name__ == "__main__":
    main()
