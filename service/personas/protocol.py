"""Request and response bodies of the persona routes (``/v1/personas``): what a persona is now
(:class:`PersonaStatus`, also the persona entries of ``/v1/models`` and what the page shows), changes,
uploads, creation.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, Field, field_validator

from store.fidelity_report import GateDecision, GateStatus
from store.ingest_report import IngestReport
from store.progress import TrainingProgress

PersonaState = Literal["card", "queued", "training", "trained", "failed", "invalid card"]
"""Served from its card only or from a trained adapter; waiting for or in training (its live version, or
its card, serves meanwhile); its last training run failed (``last_failure`` says why); or its
``persona.yaml`` does not validate (``error`` names the file and field), so it is not served."""

PERSONA_STATES: tuple[str, ...] = get_args(PersonaState)


class FidelitySummary(BaseModel):
    """The headline figures of a version's fidelity report (the full report is beside the version)."""

    perplexity: dict[str, float | None]
    """Held-out perplexity of the real replies under base, card (prompt-only persona) and adapter."""
    centroid_similarity: dict[str, float | None]
    identity: dict[str, float | None] = {}
    """Is it the character speaking? Mean identity through held-out conversations, turn by turn, for the
    card (prompt-only persona), the short prompt, the adapter and the real replies (the ceiling);
    empty when the report could not take it."""
    identity_drift: dict[str, float | None] = {}
    """Identity of the last turns minus the first (negative: the system leaves the character as a talk
    goes on)."""
    gate: str | None = None
    """``live``, ``held back`` or ``unjudged`` as the gate decided when the version was published."""
    reasons: list[str] = []


class VersionStatus(BaseModel):
    version: str
    live: bool
    held_back: bool = False
    """The fidelity gate kept this version from going live; it can still be picked or promoted."""
    gate: GateDecision | None = None
    """The gate's decision on this version (``gate.json``, else the report's): live, held back (with the
    reasons, or the evaluation's ``error``) or unjudged. None for a version published before either."""
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
    live_gate: GateStatus | None = None
    """The gate's word on the live version: ``unjudged`` when it went live without being judged."""
    error: str | None = None
    """Why the persona cannot be served (status ``invalid card``): the file and the field at fault."""

    @property
    def label(self) -> str:
        """Short status for a list: 'served from its card', 'trained v2', 'training 40%'."""
        if self.status == "invalid card":
            return "invalid card"
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
    """Every persona, those with an invalid card too (status ``invalid card``, with the error)."""
    problems: list[PersonaProblem]
    """Every folder that cannot be served, and why."""


class TrainRequest(BaseModel):
    force: bool = Field(
        default=False, description="Publish the new version even if the fidelity gate would hold it back."
    )


class VersionRequest(BaseModel):
    version: str | None = Field(
        default=None,
        description="A version such as 'v2'; for a rollback, the default is the version before the live one.",
        examples=["v1"],
    )


class PinRequest(BaseModel):
    pinned: bool = Field(description="True keeps the live version live when the persona is retrained automatically.")


class PersonaDeleted(BaseModel):
    id: str
    object: Literal["persona"] = "persona"
    deleted: bool = True


class UploadedFile(BaseModel):
    name: str = Field(description="The file's name as it will be stored in the persona's logs/ folder.")
    bytes: int


class PersonaUpload(BaseModel):
    """Chat exports staged for a persona, with what they give; nothing is stored in a persona yet."""

    id: str = Field(description="Pass it as `upload` to create a persona or add the files to one.")
    object: Literal["persona.upload"] = "persona.upload"
    created_at: int
    files: list[UploadedFile]
    report: IngestReport


class CreatePersonaRequest(BaseModel):
    name: str = Field(description="The new persona's name: a-z, 0-9, '_' and '-', up to 64 characters.")
    upload: str = Field(description="The id of a staged upload (POST /v1/personas/uploads).")
    character: list[str] = Field(
        default_factory=list,
        description="The character's name(s) in the logs, written to persona.yaml as `speakers`; needed when "
        "no speaker is named like the persona and the upload's report guessed none.",
    )
    train: bool = Field(default=True, description="Queue a training run of the new persona at once.")

    @field_validator("character", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class AddLogsRequest(BaseModel):
    upload: str = Field(description="The id of a staged upload (POST /v1/personas/uploads).")
    train: bool = Field(default=True, description="Queue a training run with the added logs at once.")
