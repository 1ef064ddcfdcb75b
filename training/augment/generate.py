"""``persona augment``: new examples in the character's voice, in small batches, for review.

For a persona with few real lines, an OpenAI-compatible generator writes new user messages in the
spirit of the real ones (shown a few at a time as examples), then replies in the character's voice
(the persona's live adapter, or the base model with the full card and real example exchanges).
Each batch of about 20 goes through the automatic rules (:mod:`.filters`) and is written to
``personas/<name>/synthetic/`` as pending, for review; nothing is trained on until accepted. Few-shot
material comes from the training split only, so the held-out evaluation stays unseen.
"""

from __future__ import annotations

import random
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field

from store.registry import Persona
from store.synthetic import Source, SyntheticExample, all_examples, batches, write_batch

from ..fidelity.card_prompt import example_exchanges, full_card_prompt
from ..server_client import Ask, Sampling, System, generate
from .filters import Candidate, Rules

BATCH_SIZE = 20
SHOTS = 6
PROMPT_WRITER = "You write short chat messages that people send to a character. Answer with the message only."


@dataclass
class AugmentReport:
    generated: int = 0
    pending: int = 0
    rejected: Counter = field(default_factory=Counter)
    batches: list[int] = field(default_factory=list)


def _clean_prompt(text: str) -> str:
    """The first line of a generated message, without list marks or quotes."""
    line = next((part for part in text.strip().splitlines() if part.strip()), "")
    line = re.sub(r"^\s*(?:[-*•]|\d+[.)]|message:|new message:)\s*", "", line, flags=re.IGNORECASE)
    return line.strip().strip('"“”').strip()


def _prompt_asks(real_prompts: list[str], count: int, rng: random.Random, seed: int) -> list[Ask]:
    asks = []
    for index in range(count):
        shots = rng.sample(real_prompts, min(SHOTS, len(real_prompts)))
        listing = "\n".join(f"- {shot}" for shot in shots)
        text = (
            f"Messages people sent:\n{listing}\n\nWrite one new message in the same spirit, about "
            "something else. Only the message."
        )
        asks.append(Ask(conversation=({"role": "user", "content": text},), seed=seed + index))
    return asks


def _judged(
    prompts: list[str], replies: list[str], rules: Rules, batch: int, source: Source, report: AugmentReport
) -> list[SyntheticExample]:
    """One batch as stored examples: rejected by a rule (with the reason) or pending review."""
    examples = []
    for prompt, reply in zip(prompts, replies):
        reason = rules.reason(Candidate(prompt, reply))
        status = "rejected" if reason else "pending"
        examples.append(
            SyntheticExample(
                id=f"syn-{secrets.token_hex(6)}",
                batch=batch,
                prompt=prompt,
                reply=reply.strip(),
                source=source,
                status=status,
                reason=reason,
            )
        )
        if reason:
            report.rejected[reason.split(":")[0]] += 1
        else:
            report.pending += 1
    return examples


def augment(
    persona: Persona,
    train_rows,
    url: str,
    *,
    n: int,
    base_id: str,
    generator_model: str | None = None,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    say=print,
    client_options=dict,
) -> AugmentReport:
    """Generate ``n`` candidate examples for ``persona`` through ``url`` and store them for review.

    ``train_rows`` are the persona's training examples (``{"messages": [...]}``); ``generator_model``
    defaults to the persona's live version, or to the base model with the full card when it has none.
    ``client_options()`` gives options for each ``openai`` client (an ``http_client`` of one's own).
    """
    pairs = example_exchanges(train_rows, 10_000)
    if not pairs:
        raise ValueError(f"persona '{persona.name}' has no user/character exchanges to learn the style from")
    real_prompts = [user for user, _ in pairs]
    rng = random.Random(seed)
    card = full_card_prompt(
        persona.title, persona.card.description, persona.system_prompt, example_exchanges(train_rows, SHOTS)
    )
    if generator_model:
        writer, speaker = System("writer", generator_model, PROMPT_WRITER), System("reply", generator_model, card)
    elif persona.live:
        writer, speaker = System("writer", base_id, PROMPT_WRITER), System("reply", persona.name)
    else:
        writer, speaker = System("writer", base_id, PROMPT_WRITER), System("reply", base_id, card)
    source = Source(url=url, model=speaker.model)
    rules = Rules(
        [line for pair in pairs for line in pair],
        persona.card.speakers or [persona.title],
        seen=[e.reply for e in all_examples(persona.path)],
    )
    report = AugmentReport()
    number = max(batches(persona.path), default=0)
    while report.generated < n:
        count = min(batch_size, n - report.generated)
        number += 1
        prompts = [
            _clean_prompt(r.text)
            for r in generate(
                url,
                [(writer, _prompt_asks(real_prompts, count, rng, seed + number * 1000))],
                Sampling(temperature=1.0, top_p=0.95, max_tokens=48),
                client_options=client_options(),
            )[0]
        ]
        asks = [
            Ask(conversation=({"role": "user", "content": p},), seed=seed + number * 1000 + i)
            for i, p in enumerate(prompts)
        ]
        replies = generate(
            url,
            [(speaker, asks)],
            Sampling(temperature=0.8, top_p=0.95, max_tokens=160),
            client_options=client_options(),
        )[0]
        examples = _judged(prompts, [r.text for r in replies], rules, number, source, report)
        write_batch(persona.path, number, examples)
        report.generated += count
        report.batches.append(number)
        say(f"batch {number}: {count} generated, {sum(e.status == 'pending' for e in examples)} for review")
    return report
