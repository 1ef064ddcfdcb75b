"""Serving speed: this server (with and without its CPU LoRA plugin) against vLLM's own server.

Run by hand on quiet cores (it takes 15-25 minutes): ``make bench`` or
``.venv/bin/python bench/serving.py``. Results are printed and appended to ``bench/RESULTS.md``;
``--quick`` is a smoke run with tiny loads that appends nothing.

Every reply runs to its token limit (``min_tokens``, as vLLM's own serving benchmark ignores the end
of sequence), so a model that ends its replies early does not get a smaller batch or less work.
Every server runs with the same engine settings (dtype, context length, whole prompts per step, batch
limits, LoRA limits, the CPU environment of ``service.engine``); only the LoRA plugin differs. Each
server is started once and measured on:

- throughput: 32 concurrent chat requests of 64 tokens, the 8 personas mixed, then the base
  model only; output tokens/s, the median of ``--rounds`` loads;
- latency: one user, then 8 users at once, streaming replies of 100 tokens from a persona (8
  different personas for 8 users) and from the base model, in turn for 3 rounds; the median time to
  first token and the median output tokens/s a user sees after the first token.

Servers: (a) this server (adapters in int8 for the plugin's kernel), (a16) with its adapters in
float16 (``PERSONA_ADAPTER_WEIGHTS=float16``), (a32) in float32 (``PERSONA_ADAPTER_WEIGHTS=float32``:
the plugin without its kernel), (a-) this server with ``PERSONA_FAST_LORA=false``, (c) vLLM's OpenAI server
with the same adapters (``--enable-lora --lora-modules``; the plugin off), and (d) transformers + PEFT
answering one request at a time (throughput only). ``--variants`` adds runs of (a) with other CPU
settings (threads, OpenMP waiting, LD_PRELOAD, dtype).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.random_adapter import publish_random_adapter  # noqa: E402
from bench.results import RESULTS, append_section, cpu_description  # noqa: E402

PROMPTS = [
    "Tell me about your favourite place.",
    "What did you have for breakfast?",
    "Any advice for a rainy day?",
    "What's the best thing that happened to you this week?",
    "How do I make friends in a new town?",
    "Describe the sky tonight.",
    "What book should I read next?",
    "Why do cats knock things over?",
]


@dataclass(frozen=True)
class Load:
    adapters: int = 8
    requests: int = 32
    max_tokens: int = 64
    latency_users: tuple[int, ...] = (1, 8)
    latency_tokens: int = 100
    latency_rounds: int = 3  # rounds of replies, personas and the base model in turn; a reply per user a round


QUICK = Load(adapters=2, requests=4, max_tokens=8, latency_users=(1, 2), latency_tokens=8, latency_rounds=1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(cache: Path, personas: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of a benchmark's ``persona serve``: this cache, personas folder and port, no chat
    page, no training, then ``settings`` (``PERSONA_*`` variables)."""
    return {
        **os.environ,
        "PERSONA_CACHE_DIR": str(cache),
        "PERSONA_PERSONAS_DIR": str(personas),
        "PERSONA_PORT": str(port),
        "PERSONA_UI": "false",
        "PERSONA_TRAIN": "false",
        **settings,
    }


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError("server did not start")


async def throughput(base_url: str, models: list[str], load: Load) -> tuple[int, float]:
    """Send all requests at once; return completion tokens and wall seconds."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=900)
    # one warm-up request per model, so first-load costs are not counted
    await asyncio.gather(
        *(
            client.chat.completions.create(model=m, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
            for m in set(models)
        )
    )
    start = time.perf_counter()
    replies = await asyncio.gather(
        *(
            client.chat.completions.create(
                model=models[i % len(models)],
                messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                max_tokens=load.max_tokens,
                temperature=0.8,
                seed=i,
                extra_body={"min_tokens": load.max_tokens},
            )
            for i in range(load.requests)
        )
    )
    elapsed = time.perf_counter() - start
    await client.close()
    return sum(r.usage.completion_tokens for r in replies), elapsed


async def stream_one(client, model: str, prompt: str, max_tokens: int, seed: int) -> tuple[float, float | None]:
    """Time to first token, and output tokens/s after it (None for replies of one token)."""
    start = time.perf_counter()
    first = last = None
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0.8,
        seed=seed,
        extra_body={"min_tokens": max_tokens},
        stream=True,
        stream_options={"include_usage": True},
    )
    tokens = 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    if first is None:
        raise RuntimeError(f"{model}: empty reply")
    rate = (tokens - 1) / (last - first) if tokens > 1 and last > first else None
    return first - start, rate


async def latency_round(base_url: str, models: list[str], users: int, load: Load, round_: int) -> list[tuple]:
    """``users`` streamed replies at once (time to first token, output tokens/s), after a short
    request to each model so that its adapter is loaded."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=900)
    await asyncio.gather(
        *(
            client.chat.completions.create(model=m, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
            for m in set(models)
        )
    )
    results = await asyncio.gather(
        *(
            stream_one(client, models[u % len(models)], PROMPTS[(u + round_) % len(PROMPTS)], load.latency_tokens, u)
            for u in range(users)
        )
    )
    await client.close()
    return list(results)


def latency(base_url: str, personas: list[str], base_id: str, users: int, load: Load) -> dict[str, tuple]:
    """Median time to first token and median per-user output tokens/s over ``load.latency_rounds``
    rounds, for personas and for the base model, in turn: a slow moment of the machine hits both."""
    results: dict[str, list[tuple]] = {"persona": [], "base model": []}
    for round_ in range(load.latency_rounds):
        for label, models in (("persona", personas), ("base model", [base_id])):
            results[label] += asyncio.run(latency_round(base_url, models, users, load, round_))
    medians = {}
    for label, replies in results.items():
        rates = [rate for _, rate in replies if rate is not None]
        medians[label] = (statistics.median(t for t, _ in replies), statistics.median(rates) if rates else float("nan"))
    return medians


@dataclass
class Measured:
    mixed: float | None = None
    base: float | None = None
    latency: dict[tuple[int, str], tuple[float, float]] | None = None


def run_server(
    command: list[str],
    env: dict[str, str],
    port: int,
    personas: list[str],
    base_id: str,
    log: Path,
    rounds: int,
    load: Load,
    with_latency: bool = True,
    base_only: bool = True,
) -> Measured:
    """Start a server, measure it, stop it."""
    url = f"http://127.0.0.1:{port}/v1"
    measured = Measured()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_healthy(f"http://127.0.0.1:{port}/health", process)
            for key, models in [("mixed", personas)] + ([("base", [base_id])] if base_only else []):
                rates = []
                for _ in range(rounds):
                    tokens, seconds = asyncio.run(throughput(url, models, load))
                    print(f"  {key}: {tokens} tokens in {seconds:.1f}s", flush=True)
                    rates.append(tokens / seconds)
                setattr(measured, key, statistics.median(rates))
            if with_latency:
                measured.latency = {}
                for users in load.latency_users:
                    for label, (ttft, rate) in latency(url, personas, base_id, users, load).items():
                        measured.latency[users, label] = (ttft, rate)
                        print(f"  {users} user(s), {label}: first token {ttft:.2f}s, {rate:.1f} tokens/s", flush=True)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    return measured


def engine_flags(settings, dtype: str, adapters: dict[str, Path], model_path: Path) -> list[str]:
    """vLLM server flags for the engine arguments ``service.engine.VllmEngine`` passes, value for value."""
    from service.engine import whole_prompt_steps
    from service.lora_memory import cpu_lora_capacity

    steps = whole_prompt_steps(settings)
    return [
        "--dtype",
        dtype,
        "--max-model-len",
        str(settings.max_model_len),
        "--no-enable-chunked-prefill" if not steps["enable_chunked_prefill"] else "--enable-chunked-prefill",
        "--max-num-batched-tokens",
        str(steps["max_num_batched_tokens"]),
        "--enable-lora",
        "--max-loras",
        str(settings.max_loras),
        "--max-lora-rank",
        str(settings.max_lora_rank),
        "--max-cpu-loras",
        str(cpu_lora_capacity(settings, model_path)),
        "--max-num-seqs",
        str(settings.max_num_seqs),
        "--tensor-parallel-size",
        str(settings.tensor_parallel_size),
        "--gpu-memory-utilization",
        str(settings.gpu_memory_utilization),
        "--disable-log-stats",
        "--lora-modules",
        *(f"{name}={path}" for name, path in adapters.items()),
    ]


def peft_loop(base, adapters: dict[str, Path], n_requests: int, max_tokens: int) -> float:
    """(d): what a user would otherwise write: one request at a time, switching adapters."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    names = list(adapters)
    model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapters[name]), adapter_name=name)
    model.eval()
    tokens = 0
    start = time.perf_counter()
    for i in range(n_requests):
        model.set_adapter(names[i % len(names)])
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        torch.manual_seed(i)
        with torch.inference_mode():
            out = model.generate(
                **ids,
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=True,
                temperature=0.8,
                pad_token_id=tokenizer.eos_token_id,
            )
        tokens += out.shape[1] - ids["input_ids"].shape[1]
    elapsed = time.perf_counter() - start
    print(f"  {tokens} tokens in {elapsed:.1f}s", flush=True)
    return tokens / elapsed


NAMES = {
    "a": "(a) this server",
    "a16": "(a16) this server, adapters in float16",
    "a32": "(a32) this server, adapters in float32",
    "a-": "(a-) this server, plugin off",
    "c": "(c) vLLM's OpenAI server",
    "d": "(d) transformers + PEFT, one at a time",
}


def report(results: dict[str, Measured], load: Load, rounds: int, dtype: str, env: dict[str, str]) -> str:
    lines = [
        f"\n## Serving speed, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"`bench/serving.py`: {load.adapters} adapters (r=16), {load.requests} concurrent chat requests of "
        f"{load.max_tokens} tokens each (`min_tokens`), median of {rounds} rounds per server; "
        f"{os.cpu_count()} cores of {cpu_description()}; {dtype}; the same engine settings for every server; "
        f"environment {env}.",
        "",
        "| server | personas mixed, tokens/s | base model only, tokens/s | mixed / base |",
        "| --- | --- | --- | --- |",
    ]
    for key, m in results.items():
        ratio = f"{m.mixed / m.base:.2f}" if m.mixed and m.base else ""
        lines.append(f"| {NAMES.get(key, key)} | {m.mixed or 0:.1f} | {f'{m.base:.1f}' if m.base else ''} | {ratio} |")
    lines.append("")
    ours, off, vllm = results.get("a"), results.get("a-"), results.get("c")
    if ours and vllm and vllm.mixed:
        lines.append(f"- (a)/(c), personas mixed: {ours.mixed / vllm.mixed:.2f} (goal at least 1.5)")
    if ours and ours.base:
        lines.append(f"- (a), personas mixed / base only: {ours.mixed / ours.base:.2f} (goal at least 0.85)")
    if ours and off and off.mixed:
        lines.append(f"- (a)/(a-), personas mixed: {ours.mixed / off.mixed:.2f} (what the plugin gives)")
    for key, what in (("a16", "int8 adapters against float16 ones"), ("a32", "int8 adapters against float32 ones")):
        other = results.get(key)
        if ours and other and other.mixed:
            lines.append(f"- (a)/({key}), personas mixed: {ours.mixed / other.mixed:.2f} (what {what} give)")
    latency_rows = [
        (key, users, label, value)
        for key, m in results.items()
        if m.latency
        for (users, label), value in m.latency.items()
    ]
    if latency_rows:
        lines += [
            "",
            f"Latency: streamed replies of {load.latency_tokens} tokens each; medians over the users' replies "
            f"of {load.latency_rounds} rounds, personas and the base model in turn.",
            "",
            "| server | users | model | time to first token, s | output tokens/s per user |",
            "| --- | --- | --- | --- | --- |",
        ]
        for key, users, label, (ttft, rate) in latency_rows:
            lines.append(f"| {NAMES.get(key, key)} | {users} | {label} | {ttft:.2f} | {rate:.1f} |")
        if ours and ours.latency:
            persona, base_model = ours.latency.get((1, "persona")), ours.latency.get((1, "base model"))
            if persona and base_model:
                lines.append(
                    f"\n- (a), one user: persona {persona[1]:.1f} tokens/s = {persona[1] / base_model[1]:.2f}x the "
                    "base model (goals: at least 20 tokens/s and 0.9x)"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", action="store_true", help="also measure other CPU settings for (a)")
    parser.add_argument("--rounds", type=int, default=2, help="throughput loads per server; the median is reported")
    parser.add_argument("--skip", default="", help="comma-separated servers to skip, e.g. a-,d")
    parser.add_argument("--quick", action="store_true", help="tiny loads, one round, nothing appended (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    skip = set(args.skip.split(",")) if args.skip else set()
    load, rounds = (QUICK, 1) if args.quick else (Load(), args.rounds)

    from service.engine import cpu_environment, engine_dtype, has_cuda, preload_libraries
    from service.lora_cpu import SWITCH
    from service.settings import ServeSettings
    from store.base_model import resolve_base_model

    cache = Path(os.environ.get("PERSONA_CACHE_DIR", REPO / ".cache"))
    base = resolve_base_model("bundled", cache)
    work = Path(tempfile.mkdtemp(prefix="persona-bench-"))
    logs = REPO / "bench" / "out"
    logs.mkdir(parents=True, exist_ok=True)
    personas = work / "personas"
    adapters: dict[str, Path] = {}
    print(f"making {load.adapters} adapters in {personas}", flush=True)
    for i in range(load.adapters):
        folder = personas / f"p{i}"
        (folder / "logs").mkdir(parents=True)
        (folder / "persona.yaml").write_text("system_prompt: You are a helpful assistant.\n")
        version = publish_random_adapter(folder, base, seed=100 + i, scale=0.02, r=16)
        adapters[f"p{i}"] = folder / "adapters" / f"v{version}"

    settings = ServeSettings(cache_dir=cache, personas_dir=personas)
    dtype = engine_dtype(settings.dtype, has_cuda())
    env = cpu_environment(settings)
    results: dict[str, Measured] = {}

    def ours(key: str, extra: dict[str, str], **options) -> Measured:
        port = free_port()
        print(f"{NAMES.get(key, key)}", flush=True)
        environment = server_env(cache, personas, port, **extra)
        log = logs / f"{re.sub(r'[^a-z0-9]+', '-', NAMES.get(key, key).lower()).strip('-')}.log"
        return run_server(
            [sys.executable, "-m", "cli.main", "serve"],
            environment,
            port,
            list(adapters),
            base.id,
            log,
            rounds,
            load,
            **options,
        )

    try:
        if "a" not in skip:
            results["a"] = ours("a", {"PERSONA_FAST_LORA": "true"})  # the server applies cpu_environment itself
        for key, weights in (("a16", "float16"), ("a32", "float32")):
            if key not in skip:
                results[key] = ours(key, {"PERSONA_FAST_LORA": "true", "PERSONA_ADAPTER_WEIGHTS": weights})
        if "a-" not in skip:
            results["a-"] = ours("a-", {"PERSONA_FAST_LORA": "false"})
        if "c" not in skip:
            port = free_port()
            print(NAMES["c"], flush=True)
            command = [
                sys.executable,
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                str(base.path),
                "--served-model-name",
                base.id,
                "--port",
                str(port),
                *engine_flags(settings, dtype, adapters, base.path),
            ]
            vllm_env = {**os.environ, **env, SWITCH: "0"}  # vLLM's own LoRA ops
            results["c"] = run_server(
                command, vllm_env, port, list(adapters), base.id, logs / "vllm-server.log", rounds, load
            )
        if "d" not in skip:
            print(NAMES["d"], flush=True)
            results["d"] = Measured(
                mixed=peft_loop(base, adapters, n_requests=min(8, load.requests), max_tokens=load.max_tokens)
            )
        if args.variants:
            other_dtype = "float32" if dtype == "bfloat16" else "bfloat16"
            variants: dict[str, dict[str, str]] = {
                "a, 1 thread (vLLM's default binding)": {
                    "VLLM_CPU_OMP_THREADS_BIND": "auto",
                    "VLLM_CPU_NUM_OF_RESERVED_CPU": "1",
                    "OMP_NUM_THREADS": "1",
                },
                f"a, {other_dtype}": {"PERSONA_DTYPE": other_dtype},
                "a, OpenMP threads sleep when idle": {"OMP_WAIT_POLICY": "PASSIVE"},
                "a, nothing preloaded (vLLM preloads torch's libgomp)": {"PERSONA_CPU_PRELOAD": "false"},
            }
            for library in preload_libraries():
                variants[f"a, only {Path(library).name} preloaded"] = {
                    "PERSONA_CPU_PRELOAD": "false",
                    "LD_PRELOAD": library,
                }
            for label, extra in variants.items():
                results[label] = ours(label, extra, with_latency=False, base_only=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    text = report(results, load, rounds, dtype, {**env, SWITCH: "1 for (a), 0 otherwise"})
    if args.quick:
        print(text)
    else:
        append_section(text, args.out)


if __name__ == "__main__":
    main()
