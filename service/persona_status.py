"""What the API and the chat page show about a persona: card, versions, training.

One type, :class:`PersonaStatus`, for ``/v1/personas``, the persona entries of ``/v1/models`` and the page.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel

from store.adapters import is_pinned
from store.errors import StoreError
from store.jobs import Job, JobStore
from store.names import version_name
from store.progress import TrainingProgress, read_progress
from store.registry import Persona

FIDELITY_JSON = "fidelity.json"
"""The fidelity report the training side writes beside a version (its figures are shown here)."""

PersonaState = Literal["card", "queued", "training", "trained", "failed"]
"""Served from its card only or from a trained adapter; waiting for or in training (its live version, or
its card, serves meanwhile); or its last training run failed (``last_failure`` says why)."""

PERSONA_STATES: tuple[str, ...] = get_args(PersonaState)


class FidelitySummary(BaseModel):
    """The headline figures of a version's fidelity report (the full report is beside the version)."""

    perplexity: dict[str, float | None]
    """Held-out perplexity of the real replies under base, card (prompt-only persona) and adapter."""
    centroid_similarity: dict[str, float | None]
    session_variation: dict[str, float | None]
    """How much replies to one question vary across fresh sessions (lower is steadier)."""
    gate: str | None = None
    """``live`` or ``held back`` as the gate decided when the version was published."""
    reasons: list[str] = []


class VersionStatus(BaseModel):
    version: str
    live: bool
    held_back: bool = False
    """The fidelity gate kept this version from going live; it can still be picked or promoted."""
    fidelity: FidelitySummary | None = None
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
    pinned: bool = False
    job: str | None = None
    """The id of the training job waiting or running for this persona."""
    queue_position: int | None = None
    """1 when the worker takes this persona's job next."""
    last_failure: str | None = None
    """Why the newest failed training job failed, until a later job succeeds (a retry may be queued)."""

    @property
    def label(self) -> str:
        """Short status for a list: 'served from its card', 'trained v2', 'training 40%'."""
        if self.status == "training":  # before its first step a run has no progress yet
            return f"training {self.training.fraction:.0%}" if self.training else "training"
        if self.status == "queued":
            return f"queued ({self.queue_position})" if self.queue_position else "queued"
        if self.status == "failed":
            return "training failed" + (f", {self.live_version} live" if self.live_version else "")
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


def _fidelity(path) -> FidelitySummary | None:
    """The version's fidelity figures, read from its ``fidelity.json`` (None before it has one)."""
    import json

    try:
        data = json.loads((path / FIDELITY_JSON).read_text(encoding="utf-8"))
        systems = data["systems"]
        gate = data.get("gate") or {}
        return FidelitySummary(
            perplexity={k: v.get("perplexity") for k, v in systems.items()},
            centroid_similarity={k: v.get("centroid_similarity") for k, v in systems.items()},
            session_variation={k: v.get("session_variation") for k, v in systems.items()},
            gate=gate.get("status"),
            reasons=gate.get("reasons") or [],
        )
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None


def _versions(persona: Persona) -> list[VersionStatus]:
    versions = []
    for number in persona.versions:
        try:
            meta = persona.metadata(number)
        except StoreError:
            continue
        fidelity = _fidelity(persona.version_path(number))
        versions.append(
            VersionStatus(
                version=version_name(number),
                live=number == persona.live,
                held_back=number != persona.live and fidelity is not None and fidelity.gate == "held back",
                fidelity=fidelity,
                created_at=meta.created_at,
                base_model=meta.base_model,
                eval_loss_before=meta.eval_loss_before,
                eval_loss_after=meta.eval_loss_after,
            )
        )
    return versions


def _last_failure(jobs: list[Job]) -> str | None:
    """Why the newest failed job failed, unless a job has succeeded since (a retry may be running)."""
    failure = None
    for job in jobs:
        if job.status == "succeeded":
            failure = None
        elif job.status == "failed" and job.error:
            failure = job.error.message
    return failure


def persona_status(persona: Persona, jobs: list[Job] | None = None) -> PersonaStatus:
    """What a persona is now; ``jobs`` are the store's job records (read here when not given)."""
    jobs = JobStore(persona.path.parent).all() if jobs is None else jobs
    waiting = [j.id for j in jobs if j.status in ("validating_files", "queued")]
    own = [j for j in jobs if j.persona == persona.name]
    active = next((j for j in own if j.status == "running"), None) or next((j for j in own if j.active), None)
    last = own[-1] if own else None
    progress = active.progress if active and active.status == "running" else None
    if active is not None:
        state = "training" if active.status == "running" else "queued"
    elif last is not None and last.status == "failed":
        state = "failed"
    else:
        state = "trained" if persona.live else "card"
    return PersonaStatus(
        name=persona.name,
        display_name=persona.title,
        description=persona.card.description,
        status=state,
        live_version=version_name(persona.live) if persona.live else None,
        versions=_versions(persona),
        greeting=persona.card.greeting,
        example_questions=persona.card.example_questions,
        training=progress or read_progress(persona.path),
        pinned=is_pinned(persona.path),
        job=active.id if active else None,
        queue_position=waiting.index(active.id) + 1 if active and active.id in waiting else None,
        last_failure=_last_failure(own),
    )
