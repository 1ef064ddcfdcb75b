"""Held-out examples from a validation set: the persona's ``validation/`` folder beside ``logs/``.

When that folder has logs (the fine-tuning API copies a job's ``validation_file`` there), their
examples are the held-out set that training evaluates on and the version's fidelity report measures,
as OpenAI's API evaluates on a validation file; every session of ``logs/`` is then trained on. The
files are read like logs (any supported format), but strictly: a held-out set with a part missing
would judge a version on something else than what was given.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from store.card import PersonaCard
from store.registry import VALIDATION_DIR

from .errors import IngestError
from .examples import ExampleSet, ExampleSettings, data_hash, split_examples
from .loader import load_logs
from .messages import LoadResult


def validation_logs(logs_root: Path) -> LoadResult | None:
    """The logs in the ``validation/`` folder beside ``logs_root``; None when there are none.

    Raises :class:`IngestError` naming each file, or part of a file, that cannot be used.
    """
    folder = Path(logs_root).parent / VALIDATION_DIR
    if not folder.is_dir() or not any(p.is_file() and not p.name.startswith(".") for p in folder.rglob("*")):
        return None
    result = load_logs(folder)
    problems = [f"{path}: {why}" for path, why in result.problems]
    problems += [f"{parsed.path}: {why}" for parsed in result.files for why in parsed.problems]
    if problems:
        raise IngestError("validation file cannot be used as the held-out set: " + "; ".join(problems))
    return result


def with_validation(result: LoadResult, persona_name: str, card: PersonaCard, settings: ExampleSettings) -> ExampleSet:
    """The examples of ``result``, held out from the validation logs when the persona has some."""
    validation = validation_logs(result.root)
    if validation is None:
        return split_examples(result, persona_name, card, settings)
    examples = split_examples(result, persona_name, card, dataclasses.replace(settings, heldout_fraction=0.0))
    try:
        held = split_examples(
            validation, persona_name, card, dataclasses.replace(settings, heldout_fraction=0.0, min_examples=0)
        )
    except IngestError as exc:
        raise IngestError(f"{validation.root}: {exc}") from exc
    if not len(held.train):
        raise IngestError(
            f"{validation.root}: no reply of the character to hold out; the validation file needs "
            "assistant messages (or lines of the character's speaker)"
        )
    return dataclasses.replace(
        examples,
        heldout=held.train,
        data_hash=data_hash(examples.train.to_list(), held.train.to_list()),
        heldout_sessions=sorted(set(held.train["session"])),
    )
