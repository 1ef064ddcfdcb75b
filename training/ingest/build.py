"""A persona's examples, built in one place: its logs, its card's example and privacy settings, and
its ``validation/`` folder when it has one.

    examples = persona_examples(persona)   # ExampleSet: train, heldout, data_hash, counts

A training job builds them once and hands the same set to the skip check, to training and to the
fidelity gate, so the three always judge the same examples. :func:`build_examples` is the step below,
for logs that are not (yet) a persona's (``persona ingest --logs-dir``).
"""

from __future__ import annotations

from store.card import CARD_FILE, PersonaCard
from store.registry import Persona

from .errors import IngestError
from .examples import ExampleSet, ExampleSettings
from .loader import load_logs
from .messages import LoadResult
from .validation import with_validation

__all__ = ["build_examples", "example_settings", "persona_examples"]


def build_examples(
    result: LoadResult,
    persona_name: str,
    card: PersonaCard,
    settings: ExampleSettings | None = None,
) -> ExampleSet:
    """Turn loaded logs into training and held-out examples.

    The held-out examples are a split of the sessions (:func:`.examples.split_examples`), or the
    examples of the persona's ``validation/`` logs when it has some (:mod:`.validation`). Raises as
    ``split_examples`` does, and :class:`IngestError` for validation logs that cannot be used.
    """
    return with_validation(result, persona_name, card, settings or ExampleSettings())


def example_settings(persona: Persona) -> ExampleSettings:
    """The persona's example settings from its card's ``training:``; :class:`IngestError` names the field."""
    try:
        return ExampleSettings.from_overrides(persona.card.training)
    except ValueError as exc:
        raise IngestError(f"{persona.path / CARD_FILE}: training: {exc}") from exc


def persona_examples(persona: Persona) -> ExampleSet:
    """The persona's examples, from its stored logs and card.

    Raises :class:`IngestError` (or a subclass: too few examples, no character speaker) naming the
    file or the card's field that is wrong.
    """
    settings = example_settings(persona)
    if not persona.logs_dir.is_dir():
        raise IngestError(f"persona '{persona.name}' has no logs folder ({persona.logs_dir}); add chat logs there")
    return build_examples(load_logs(persona.logs_dir), persona.name, persona.card, settings)
