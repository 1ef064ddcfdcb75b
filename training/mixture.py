"""What a run trains on: the persona's real examples, accepted generated ones at a lower weight, and
general conversation (replay) against forgetting.

The held-out split is made from the logs alone (:func:`training.ingest.build_examples`) before
anything is added here, so the evaluation only ever scores real replies. Generated examples go
through the same system-prompt rule and privacy replacement as the logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from store.adapters import ExampleCounts
from store.chat_format import with_system_prompt
from store.registry import Persona
from store.synthetic import SyntheticExample, accepted

from .config import TrainConfig
from .replay import replay_count, replay_rows

__all__ = ["TrainingMix", "synthetic_rows", "training_mix"]

Conversations = list[list[dict[str, str]]]


@dataclass
class TrainingMix:
    """The training rows of one run and how many came from where."""

    train: list[dict[str, Any]]
    counts: ExampleCounts

    def describe(self) -> str:
        """One line for the training log."""
        counts = self.counts
        return (
            f"training on {counts.real} real, {counts.synthetic} generated (accepted) and {counts.replay} "
            "general-conversation (replay) examples"
        )


def synthetic_rows(
    examples: Sequence[SyntheticExample], system_prompt: str, weight: float, scrub: Callable[[str], str] = str
) -> list[dict[str, Any]]:
    """Accepted generated examples as training rows whose reply has ``weight``; none when it is 0."""
    if weight <= 0:
        return []
    rows = []
    for example in examples:
        messages = [
            {"role": "user", "content": scrub(example.prompt), "weight": 0.0},
            {"role": "assistant", "content": scrub(example.reply), "weight": float(weight)},
        ]
        rows.append({"messages": with_system_prompt(messages, system_prompt), "session": f"synthetic/{example.batch}"})
    return rows


def _scrubber(persona: Persona) -> Callable[[str], str]:
    from .ingest.privacy import privacy_settings, scrub

    settings = privacy_settings(persona.card.privacy)
    return lambda text: scrub(text, settings)[0]


def training_mix(
    persona: Persona,
    real_train: Any,
    config: TrainConfig,
    replay: Callable[[], Conversations],
    *,
    replies: int | None = None,
) -> TrainingMix:
    """The rows of a run: ``real_train`` (the training split of the logs), the persona's accepted
    generated examples at ``config.synthetic_weight`` and ``config.replay_share`` of replay.

    ``replay`` gives the replay conversations; it is only called when replay is on. ``replies`` is the
    number of real replies when a row holds several (whole sessions); shares and counts are of replies.
    """
    real = list(real_train)
    replies = len(real) if replies is None else replies
    synthetic = synthetic_rows(
        accepted(persona.path),
        persona.card.effective_system_prompt(persona.name),
        config.synthetic_weight,
        _scrubber(persona),
    )
    replayed: list[dict[str, Any]] = []
    if config.replay_share > 0:
        conversations = replay()
        count = replay_count(config.replay_share, replies + len(synthetic), len(conversations))
        replayed = replay_rows(conversations, count, config.seed)
    counts = ExampleCounts(real=replies, synthetic=len(synthetic), replay=len(replayed))
    return TrainingMix(train=real + synthetic + replayed, counts=counts)
