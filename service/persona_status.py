"""What the API and the chat page show about a persona: card, versions, training.

One type, :class:`PersonaStatus`, for ``/v1/personas``, the persona entries of ``/v1/models`` and the page.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel

from store.errors import StoreError
from store.names import version_name
from store.progress import TrainingProgress, read_progress
from store.registry import Persona

PersonaState = Literal["card", "trained", "training"]
"""Served from its card only, from a trained adapter, or being trained (its live version serves meanwhile)."""

PERSONA_STATES: tuple[str, ...] = get_args(PersonaState)


class VersionStatus(BaseModel):
    version: str
    live: bool
    created_at: str | None = None
    base_model: str | None = None
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None


class PersonaStatus(BaseModel):
    name: str
    display_name: str
    description: str
    status: PersonaState
    live_version: str | None
    versions: list[VersionStatus]
    greeting: str | None
    example_questions: list[str]
    training: TrainingProgress | None = None

    @property
    def label(self) -> str:
        """Short status for a list: 'served from its card', 'trained v2', 'training 40%'."""
        if self.status == "training" and self.training:
            return f"training {self.training.fraction:.0%}"
        if self.live_version:
            return f"trained {self.live_version}"
        return "served from its card"


class PersonaProblem(BaseModel):
    """A persona folder that cannot be served, and why."""

    persona: str
    message: str


class PersonaList(BaseModel):
    data: list[PersonaStatus]
    problems: list[PersonaProblem]


def persona_status(persona: Persona) -> PersonaStatus:
    versions = []
    for number in persona.versions:
        try:
            meta = persona.metadata(number)
        except StoreError:
            continue
        versions.append(
            VersionStatus(
                version=version_name(number),
                live=number == persona.live,
                created_at=meta.created_at,
                base_model=meta.base_model,
                eval_loss_before=meta.eval_loss_before,
                eval_loss_after=meta.eval_loss_after,
            )
        )
    progress = read_progress(persona.path)
    training = progress is not None and progress.state == "running"
    return PersonaStatus(
        name=persona.name,
        display_name=persona.title,
        description=persona.card.description,
        status="training" if training else ("trained" if persona.live else "card"),
        live_version=version_name(persona.live) if persona.live else None,
        versions=versions,
        greeting=persona.card.greeting,
        example_questions=persona.card.example_questions,
        training=progress,
    )
