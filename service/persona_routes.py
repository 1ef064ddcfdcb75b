"""Changing a persona over HTTP: train, roll back, promote, pin and remove.

Each answers with the persona's status as ``GET /v1/personas/<name>`` shows it (training answers with
the queued job). The store is the only state: a change here is what the CLI and the page do too, and
every replica sharing the store sees it on its next request.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from store.adapters import rollback, set_pinned
from store.errors import InvalidName, PersonaNotFound, StoreError, VersionNotFound
from store.jobs import Job
from store.names import check_version
from store.registry import Persona

from .errors import APIError, bad_request
from .openapi import error_responses
from .persona_status import PersonaStatus, persona_status
from .routes import require_key

router = APIRouter(
    prefix="/v1/personas",
    dependencies=[Depends(require_key)],
    tags=["personas"],
    responses=error_responses(400, 401, 404),
)


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


def _persona(request: Request, name: str) -> Persona:
    try:
        return request.app.state.store.get(name)
    except (InvalidName, PersonaNotFound) as exc:
        raise APIError(404, str(exc), "invalid_request_error", "name", "persona_not_found") from None
    except StoreError as exc:  # a folder whose card cannot be read
        raise bad_request(str(exc), "name", "persona_not_loaded") from None


def _version(text: str | None) -> int | None:
    try:
        return None if text is None else check_version(text)
    except InvalidName as exc:
        raise bad_request(str(exc), "version", "invalid_value") from None


def _status(request: Request, name: str) -> PersonaStatus:
    return persona_status(_persona(request, name))


@router.post("/{name}/train", response_model=Job, status_code=202, responses=error_responses(503))
async def train(request: Request, name: str, body: TrainRequest | None = None) -> Job:
    """Queue a training run of the persona's logs (a run already waiting is reused)."""
    persona = _persona(request, name)
    training = getattr(request.app.state, "training", None)
    if training is None:
        raise APIError(503, "This server has no job queue.", "server_error", None, "not_ready")
    return training.request(persona.name, "api", force=bool(body and body.force))


@router.post("/{name}/rollback", response_model=PersonaStatus)
async def roll_back(request: Request, name: str, body: VersionRequest | None = None) -> PersonaStatus:
    """Make an earlier version live; new requests use it at once, running ones finish on theirs."""
    persona = _persona(request, name)
    try:
        rollback(persona.path, _version(body.version if body else None))
    except VersionNotFound as exc:
        raise APIError(404, str(exc), "invalid_request_error", "version", "version_not_found") from None
    except StoreError as exc:
        raise APIError(409, str(exc), "invalid_request_error", "version", "no_earlier_version") from None
    return _status(request, name)


@router.post("/{name}/promote", response_model=PersonaStatus)
async def promote(request: Request, name: str, body: VersionRequest) -> PersonaStatus:
    """Make a version live, e.g. one the fidelity gate held back."""
    if body.version is None:
        raise bad_request("version: name the version to make live, e.g. 'v3'", "version", "missing_required_parameter")
    persona = _persona(request, name)
    try:
        rollback(persona.path, _version(body.version))
    except VersionNotFound as exc:
        raise APIError(404, str(exc), "invalid_request_error", "version", "version_not_found") from None
    return _status(request, name)


@router.put("/{name}/pin", response_model=PersonaStatus)
async def pin(request: Request, name: str, body: PinRequest) -> PersonaStatus:
    """Pin or unpin the live version."""
    persona = _persona(request, name)
    try:
        set_pinned(persona.path, body.pinned)
    except StoreError as exc:
        raise APIError(409, str(exc), "invalid_request_error", "pinned", "nothing_to_pin") from None
    return _status(request, name)


@router.delete("/{name}", response_model=PersonaDeleted)
async def remove(request: Request, name: str) -> PersonaDeleted:
    """Take the persona out of service; its folder moves to ``.removed/`` in the personas folder."""
    persona = _persona(request, name)
    request.app.state.store.remove(persona.name)
    training = getattr(request.app.state, "training", None)
    if training is not None:
        for job in training.jobs.queued():
            if job.persona == persona.name:
                training.cancel(job.id)
    return PersonaDeleted(id=persona.name)
