"""Synthetic examples of a persona and their review state: ``personas/<name>/synthetic/``.

Generated examples never go into ``logs/``: they live here, one JSONL file per generation batch,
each example with where it came from and its review state. Only ``accepted`` ones are trained on
(at a lower weight than real lines, and never in the held-out split). The training side writes new
batches; the review (terminal or page) changes states and edits replies.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from .files import atomic_write

SYNTHETIC_DIR = "synthetic"
Status = Literal["pending", "accepted", "rejected"]


class Source(BaseModel):
    """The generator that wrote an example: an OpenAI-compatible endpoint and model."""

    url: str
    model: str


class SyntheticExample(BaseModel):
    id: str
    batch: int
    prompt: str
    """The user turn, written by the generator in the spirit of the persona's real prompts."""
    reply: str
    """The character's reply, in its voice."""
    source: Source
    created_at: float = Field(default_factory=time.time)
    status: Status = "pending"
    reason: str | None = None
    """Why it was rejected (by a rule or by the reviewer)."""
    edited: bool = False

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.reply}]


def synthetic_dir(persona_path: Path) -> Path:
    return Path(persona_path) / SYNTHETIC_DIR


def _batch_path(persona_path: Path, batch: int) -> Path:
    return synthetic_dir(persona_path) / f"batch-{batch:04d}.jsonl"


def batches(persona_path: Path) -> list[int]:
    folder = synthetic_dir(persona_path)
    if not folder.is_dir():
        return []
    numbers = []
    for path in folder.glob("batch-*.jsonl"):
        try:
            numbers.append(int(path.stem.split("-", 1)[1]))
        except ValueError:
            continue
    return sorted(numbers)


def read_batch(persona_path: Path, batch: int) -> list[SyntheticExample]:
    path = _batch_path(persona_path, batch)
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(SyntheticExample.model_validate_json(line))
    return out


def write_batch(persona_path: Path, batch: int, examples: list[SyntheticExample]) -> Path:
    path = _batch_path(persona_path, batch)
    atomic_write(path, "".join(e.model_dump_json() + "\n" for e in examples))
    return path


def all_examples(persona_path: Path) -> list[SyntheticExample]:
    return [example for batch in batches(persona_path) for example in read_batch(persona_path, batch)]


def accepted(persona_path: Path) -> list[SyntheticExample]:
    """The examples a reviewer accepted: the only ones training uses."""
    return [example for example in all_examples(persona_path) if example.status == "accepted"]


def review(
    persona_path: Path, example_id: str, status: Status, reply: str | None = None, reason: str | None = None
) -> SyntheticExample:
    """Accept, reject or edit (then accept) one example; raises KeyError for an unknown id."""
    for batch in batches(persona_path):
        examples = read_batch(persona_path, batch)
        for index, example in enumerate(examples):
            if example.id != example_id:
                continue
            changes: dict = {"status": status, "reason": reason if status == "rejected" else None}
            if reply is not None and reply.strip() and reply != example.reply:
                changes.update(reply=reply.strip(), edited=True)
            examples[index] = example.model_copy(update=changes)
            write_batch(persona_path, batch, examples)
            return examples[index]
    raise KeyError(example_id)
