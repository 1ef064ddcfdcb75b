"""Does training give the character its voice? One persona, trained with the defaults, measured.

Run by hand: ``.venv/bin/python bench/persona_eval.py wren`` (trains a copy of the persona with the
defaults, which takes several minutes, then serves it). ``--no-train`` measures the live version of
the persona in ``personas/`` instead. Appends to ``bench/RESULTS.md``:

- wall time and training tokens/s of the run, held-out loss before (base model with the card's
  prompt) and after (adapter), from the version's ``metadata.json``;
- how often the card's ``voice_markers`` appear in replies to held-out prompts: the base model with
  the card's system prompt against the trained adapter, same prompts, sampling and seeds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results import RESULTS, append_section  # noqa: E402
from bench.serving import free_port, wait_healthy  # noqa: E402


def heldout_prompts(persona, count: int) -> tuple[list[list[dict[str, str]]], int]:
    """The conversations before each held-out target, without the system prompt (the server adds it)."""
    from training.ingest import ExampleSettings, build_examples, load_logs

    examples = build_examples(load_logs(persona.logs_dir), persona.name, persona.card,
                              ExampleSettings.from_overrides(persona.card.training))
    rows = list(examples.heldout) + list(examples.train)  # held-out first; topped up if it is short
    prompts = []
    for row in rows[:count]:
        history = [{"role": m["role"], "content": m["content"]} for m in row["messages"][:-1] if m["role"] != "system"]
        prompts.append(history or [{"role": "user", "content": "Hello!"}])
    return prompts, len(examples.heldout)


async def replies(url: str, model: str, prompts, system: str | None, temperature: float, max_tokens: int) -> list[str]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
    out = await asyncio.gather(*(
        client.chat.completions.create(
            model=model, messages=([{"role": "system", "content": system}] if system else []) + p,
            temperature=temperature, max_tokens=max_tokens, seed=i,
        )
        for i, p in enumerate(prompts)
    ))
    await client.close()
    return [r.choices[0].message.content for r in out]


def marker_rate(texts: list[str], markers: list[str]) -> float:
    patterns = [re.compile(m, re.IGNORECASE) for m in markers]
    return sum(any(p.search(t) for p in patterns) for t in texts) / max(len(texts), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("persona")
    parser.add_argument("--no-train", action="store_true", help="measure the live version in personas/")
    parser.add_argument("--replies", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=60)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from store.registry import PersonaStore

    cache = Path(os.environ.get("PERSONA_CACHE_DIR", REPO / ".cache"))
    env = {**os.environ, "PERSONA_CACHE_DIR": str(cache)}
    if args.no_train:
        root = REPO / "personas"
    else:
        root = Path(tempfile.mkdtemp(prefix="persona-eval-")) / "personas"
        shutil.copytree(REPO / "personas" / args.persona, root / args.persona, ignore=shutil.ignore_patterns("adapters"))
        print(f"training {args.persona} with the defaults in {root}", flush=True)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cli.main", "train", args.persona, "--personas-dir", str(root)],
                       cwd=REPO, env=env, check=True)
        print(f"trained in {time.perf_counter() - started:.0f} s", flush=True)
    persona = PersonaStore(root).get(args.persona)
    if persona.live is None:
        sys.exit(f"{args.persona} has no live version in {root}")
    meta = persona.metadata(persona.live)
    prompts, n_heldout = heldout_prompts(persona, args.replies)
    temperature = persona.card.sampling.temperature if persona.card.sampling.temperature is not None else 0.8

    port = free_port()
    log = REPO / "bench" / "out" / f"eval-{args.persona}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    server_env = {**env, "PERSONA_PERSONAS_DIR": str(root), "PERSONA_PORT": str(port), "PERSONA_UI": "false"}
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"], cwd=REPO, env=server_env,
                                  stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_healthy(f"http://127.0.0.1:{port}/health", server)
            url = f"http://127.0.0.1:{port}/v1"
            base_id = "SmolLM2-135M-Instruct"
            card_texts = asyncio.run(replies(url, base_id, prompts, persona.system_prompt, temperature, args.max_tokens))
            adapter_texts = asyncio.run(replies(url, args.persona, prompts, None, temperature, args.max_tokens))
        finally:
            server.terminate()
            server.wait(timeout=60)

    markers = persona.card.voice_markers
    card_rate, adapter_rate = marker_rate(card_texts, markers), marker_rate(adapter_texts, markers)
    lines = [
        f"\n## Persona voice: {args.persona} v{persona.live}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"`bench/persona_eval.py {args.persona}{' --no-train' if args.no_train else ''}`; {os.cpu_count()} cores.", "",
        f"- training: {meta.duration_s or 0:.0f} s wall, {meta.model_extra.get('tokens_per_s', 'n/a')} tokens/s, "
        f"tokens {meta.tokens}",
        f"- held-out loss: {meta.eval_loss_before} before (base + card prompt) -> {meta.eval_loss_after} after (adapter)",
        f"- voice markers {markers} in {len(prompts)} replies to held-out prompts ({n_heldout} held-out examples, "
        f"topped up from training prompts if fewer), temperature {temperature}, {args.max_tokens} tokens:",
        f"  base + card {card_rate:.0%}, adapter {adapter_rate:.0%}",
        "", "Sample replies (first three, base + card | adapter):", "",
    ]
    for card_text, adapter_text in list(zip(card_texts, adapter_texts))[:3]:
        lines.append(f"- {card_text.strip()[:160]!r} | {adapter_text.strip()[:160]!r}")
    text = "\n".join(lines) + "\n"
    append_section(text, args.out)


if __name__ == "__main__":
    main()
