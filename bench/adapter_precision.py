"""What serving an adapter in 8 or 16 bits costs: held-out perplexity of a trained persona as served.

Run by hand: ``.venv/bin/python bench/adapter_precision.py zeph`` trains a copy of the example persona
with the defaults (``persona train``, a few minutes), or takes a version already trained
(``--version-dir``), then scores the persona's held-out replies (the fidelity report's perplexity:
training's held-out loss on the real replies) with the adapter's weights as a float32 CPU engine
serves them with each ``--adapter-weights`` choice (:func:`bench.served_adapter.round_as_served`),
beside float32. Also the mean KL divergence of the next-token distributions from float32's and how
often the likeliest token is the same. Appends to ``bench/RESULTS.md`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.persona_eval import train_copy  # noqa: E402
from bench.results import RESULTS, append_section  # noqa: E402
from bench.served_adapter import round_as_served  # noqa: E402
from service.lora_cpu import ADAPTER_WEIGHTS  # noqa: E402

WEIGHTS = ("float32", *(weights for weights in ADAPTER_WEIGHTS if weights != "float32"))
"""float32 first: the reference the others are compared with."""


def heldout_conversations(persona, count: int) -> list:
    """The persona's held-out conversations whose last turn, a real reply, is scored (as the report does)."""
    from training.fidelity.plan import make_plan
    from training.ingest.build import persona_examples

    examples = persona_examples(persona)
    plan = make_plan(examples.heldout, [], prompts=0, probes=0, sessions=0, scored=count)
    return plan.scored_as(persona.system_prompt)


def next_token_agreement(scorer, conversations: list, reference: list) -> tuple[list, float, float]:
    """Each conversation's next-token log probabilities, with the mean KL divergence from
    ``reference`` (when given) and the share of positions whose likeliest token is the same."""
    import torch

    from store.chat_format import render_conversation

    outputs, kl, same, positions = [], 0.0, 0, 0
    with torch.no_grad():
        for index, conversation in enumerate(conversations):
            ids, _ = render_conversation(scorer.tokenizer, conversation)
            logprobs = torch.log_softmax(scorer.model(torch.tensor([ids[-1024:]])).logits[0].float(), dim=-1)
            outputs.append(logprobs)
            if reference:
                base = reference[index]
                kl += float((base.exp() * (base - logprobs)).sum())
                same += int((base.argmax(-1) == logprobs.argmax(-1)).sum())
                positions += base.shape[0]
    return outputs, kl / max(positions, 1), same / max(positions, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("persona")
    parser.add_argument("--personas-dir", type=Path, default=REPO / "personas", help="where the persona is")
    parser.add_argument("--version-dir", type=Path, help="a trained version folder of the persona (no training)")
    parser.add_argument("--replies", type=int, default=40, help="held-out replies scored")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from store.registry import PersonaStore
    from training.fidelity.perplexity import Scorer

    cache = Path(os.environ.setdefault("PERSONA_CACHE_DIR", str(REPO / ".cache")))
    personas_dir, version = args.personas_dir, args.version_dir
    if version is None:
        personas_dir, _ = train_copy(args.persona, args.personas_dir, dict(os.environ), {}, {})
    persona = PersonaStore(personas_dir).get(args.persona)
    version = version or persona.version_path(persona.live)
    conversations = heldout_conversations(persona, args.replies)

    from store.base_model import resolve_base_model

    base = resolve_base_model("bundled", cache)
    rows, reference = [], []
    for weights in WEIGHTS:
        scorer = Scorer.load(base.path, version)
        round_as_served(scorer.model, weights)
        perplexity = scorer.score(conversations, adapter=True).perplexity
        outputs, kl, same = next_token_agreement(scorer, conversations, reference)
        reference = reference or outputs
        rows.append((weights, perplexity, kl, same))
        print(f"  {weights}: perplexity {perplexity:.4f}, KL {kl:.2e}, same likeliest token {same:.4f}", flush=True)

    first = rows[0][1]
    trained = "a version trained with the defaults" if args.version_dir is None else f"version {version}"
    lines = [
        f"\n## Adapter weights as served (bench/adapter_precision.py), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n",
        f"`bench/adapter_precision.py {args.persona}`: {trained}; "
        f"{len(conversations)} held-out real replies scored as the fidelity report scores them (training's "
        "held-out loss), with the adapter's weights rounded as a float32 CPU engine serves them "
        "(`--adapter-weights`; bfloat16 in the engine's adapter cache, then int8 with a scale per row or "
        "float16 for the kernel). KL: mean over every position of the next-token distribution's divergence "
        "from float32's.\n",
        "| adapter weights | held-out perplexity | against float32 | KL from float32 | same likeliest token |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines.append(f"| {rows[0][0]} | {first:.4f} | the reference | | |")
    for weights, perplexity, kl, same in rows[1:]:
        lines.append(
            f"| {weights} | {perplexity:.4f} | {100 * (perplexity / first - 1):+.3f}% | {kl:.2e} | {100 * same:.2f}% |"
        )
    append_section("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
