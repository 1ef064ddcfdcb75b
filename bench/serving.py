"""Serving throughput: this server against vLLM's own server and a transformers + PEFT loop.

Run by hand (it takes several minutes): ``make bench`` or ``.venv/bin/python bench/serving.py``.
Results are appended to ``bench/RESULTS.md``. On the same machine and in one run it measures output
tokens/s for 32 concurrent chat requests of up to 64 tokens with 8 adapters:

(a) this server, the 8 personas mixed;  (b) this server, base model only;
(c) vLLM's OpenAI server with the same adapters (``--enable-lora --lora-modules``);
(d) transformers + PEFT answering one request at a time with ``set_adapter`` per request.

``--variants`` adds runs of (a) with other CPU settings (threads, OpenMP waiting, LD_PRELOAD, dtype) to pick defaults.
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
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.random_adapter import publish_random_adapter  # noqa: E402
from bench.results import RESULTS, append_section  # noqa: E402

N_ADAPTERS = 8
N_REQUESTS = 32
MAX_TOKENS = 64
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 400) -> None:
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


async def load(base_url: str, models: list[str]) -> tuple[int, float]:
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
                max_tokens=MAX_TOKENS,
                temperature=0.8,
                seed=i,
            )
            for i in range(N_REQUESTS)
        )
    )
    elapsed = time.perf_counter() - start
    await client.close()
    return sum(r.usage.completion_tokens for r in replies), elapsed


def run_server(command: list[str], env: dict[str, str], port: int, models: list[str], log: Path, rounds: int) -> float:
    """Start a server, send the load ``rounds`` times, and return the median output tokens/s."""
    rates = []
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_healthy(f"http://127.0.0.1:{port}/health", process)
            for _ in range(rounds):
                tokens, seconds = asyncio.run(load(f"http://127.0.0.1:{port}/v1", models))
                print(f"  {tokens} tokens in {seconds:.1f}s", flush=True)
                rates.append(tokens / seconds)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    return statistics.median(rates)


def peft_loop(base, adapters: dict[str, Path], n_requests: int) -> float:
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
                **ids, max_new_tokens=MAX_TOKENS, do_sample=True, temperature=0.8, pad_token_id=tokenizer.eos_token_id
            )
        tokens += out.shape[1] - ids["input_ids"].shape[1]
    elapsed = time.perf_counter() - start
    print(f"  {tokens} tokens in {elapsed:.1f}s", flush=True)
    return tokens / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", action="store_true", help="also measure other CPU settings for (a)")
    parser.add_argument("--rounds", type=int, default=2, help="loads per server; the median is reported")
    parser.add_argument("--skip", default="", help="comma-separated cases to skip, e.g. c,d")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    skip = set(args.skip.split(",")) if args.skip else set()

    from service.engine import cpu_environment, engine_dtype, has_cuda, preload_libraries
    from service.settings import ServeSettings
    from store.base_model import resolve_base_model

    cache = Path(os.environ.get("PERSONA_CACHE_DIR", REPO / ".cache"))
    base = resolve_base_model("bundled", cache)
    work = Path(tempfile.mkdtemp(prefix="persona-bench-"))
    logs = REPO / "bench" / "out"
    logs.mkdir(parents=True, exist_ok=True)
    personas = work / "personas"
    adapters: dict[str, Path] = {}
    print(f"making {N_ADAPTERS} adapters in {personas}", flush=True)
    for i in range(N_ADAPTERS):
        folder = personas / f"p{i}"
        (folder / "logs").mkdir(parents=True)
        (folder / "persona.yaml").write_text("system_prompt: You are a helpful assistant.\n")
        version = publish_random_adapter(folder, base, seed=100 + i, scale=0.02, r=16)
        adapters[f"p{i}"] = folder / "adapters" / f"v{version}"

    serve_settings = ServeSettings(cache_dir=cache)
    dtype = engine_dtype(serve_settings.dtype, has_cuda())
    tuned = {**os.environ, **cpu_environment(serve_settings)}  # for (c): the same CPU settings as ours
    results: dict[str, float] = {}

    def ours(label: str, models: list[str], env: dict[str, str]) -> None:
        port = free_port()
        print(f"({label}) this server, models {models[:3]}...", flush=True)
        env = {
            **env,
            "PERSONA_CACHE_DIR": str(cache),
            "PERSONA_PERSONAS_DIR": str(personas),
            "PERSONA_PORT": str(port),
            "PERSONA_UI": "false",
        }
        results[label] = run_server(
            [sys.executable, "-m", "cli.main", "serve"],
            env,
            port,
            models,
            logs / f"serve-{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')}.log",
            args.rounds,
        )

    if "a" not in skip:
        ours("a", list(adapters), dict(os.environ))  # the server applies cpu_environment itself
    if "b" not in skip:
        ours("b", [base.id], dict(os.environ))
    if "c" not in skip:
        port = free_port()
        print("(c) vLLM's OpenAI server", flush=True)
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
            "--dtype",
            dtype,
            "--max-model-len",
            str(serve_settings.max_model_len),
            "--enable-lora",
            "--max-loras",
            str(N_ADAPTERS),
            "--max-lora-rank",
            "16",
            "--max-cpu-loras",
            str(serve_settings.max_cpu_loras),
            "--max-num-seqs",
            str(serve_settings.max_num_seqs),
            "--disable-log-stats",
            "--lora-modules",
            *(f"{name}={path}" for name, path in adapters.items()),
        ]
        results["c"] = run_server(command, tuned, port, list(adapters), logs / "vllm-server.log", args.rounds)
    if "d" not in skip:
        print("(d) transformers + PEFT, one request at a time", flush=True)
        results["d"] = peft_loop(base, adapters, n_requests=8)  # one round: it is slow and steady
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
            ours(label, list(adapters), {**os.environ, **extra})
    shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"\n## Serving throughput, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"`bench/serving.py`: {N_ADAPTERS} adapters (r=16), {N_REQUESTS} concurrent chat requests of up to "
        f"{MAX_TOKENS} tokens, median of {args.rounds} rounds per server; {os.cpu_count()} cores; {dtype} for "
        f"(a), (b) and (c); settings {cpu_environment(serve_settings)}.",
        "",
        "| case | output tokens/s |",
        "| --- | --- |",
    ]
    names = {
        "a": "(a) this server, 8 personas mixed",
        "b": "(b) this server, base model only",
        "c": "(c) vLLM's OpenAI server, same adapters",
        "d": "(d) transformers + PEFT, one at a time",
    }
    for key, value in results.items():
        lines.append(f"| {names.get(key, key)} | {value:.1f} |")
    lines.append("")
    if "a" in results and "c" in results:
        lines.append(f"- (a)/(c) = {results['a'] / results['c']:.2f} (target at least 0.95)")
    if "a" in results and "d" in results:
        lines.append(f"- (a)/(d) = {results['a'] / results['d']:.2f} (target at least 4)")
    if "a" in results and "b" in results:
        lines.append(f"- (a)/(b) = {results['a'] / results['b']:.2f} (cost of mixing adapters)")
    text = "\n".join(lines) + "\n"
    append_section(text, args.out)


if __name__ == "__main__":
    main()
