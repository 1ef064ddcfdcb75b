"""Personas over HTTP: list and read them, upload logs, create a persona or add to one, train, roll
back, promote, pin, remove.

Each change answers with the persona's status as ``GET /v1/personas/<name>`` shows it (training answers
with the queued job). The routes only dispatch: the logic lives in :mod:`.status`, :mod:`.actions` and
:mod:`service.uploads`, which the page calls too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile

from store.catalog import Catalog
from store.errors import StoreError
from store.jobs import Job

from ..auth import require_key
from ..errors import store_error
from ..openapi import error_responses
from ..protocol import ErrorResponse
from ..store_changes import marks_changes
from ..uploads import CHUNK, Uploads
from . import actions
from .protocol import (
    AddLogsRequest,
    CreatePersonaRequest,
    PersonaDeleted,
    PersonaList,
    PersonaProblem,
    PersonaStatus,
    PersonaUpload,
    PinRequest,
    TrainRequest,
    VersionRequest,
)
from .status import all_statuses, status_by_name

router = APIRouter(
    prefix="/v1/personas",
    dependencies=[Depends(require_key), Depends(marks_changes)],
    tags=["personas"],
    responses=error_responses(401),
)
CHANGES = error_responses(400, 404, 409)
"""A change's errors: a bad value, no such persona or version, a persona that cannot be changed as it is
(its card does not validate, nothing to roll back to or pin)."""

EXISTS = {
    409: {
        "model": ErrorResponse,
        "description": "A persona of that name exists (`persona_exists`), or a log file of that name with other "
        "content (`file_exists`).",
    }
}


def _uploads(request: Request) -> Uploads:
    return request.app.state.uploads


def _catalog(request: Request) -> Catalog | None:
    return getattr(request.app.state, "catalog", None)


def _training(request: Request):
    return getattr(request.app.state, "training", None)


async def _chunks(file: UploadFile) -> AsyncIterator[bytes]:
    while data := await file.read(CHUNK):
        yield data


@router.get("", response_model=PersonaList)
async def list_personas(request: Request) -> Response:
    """Every persona with its card, versions and training (one whose card does not validate is listed
    with status ``invalid card`` and the error); folders that cannot be served, with why. Read and
    written as JSON off the event loop."""
    return Response(await asyncio.to_thread(_persona_list_json, request), media_type="application/json")


def _persona_list_json(request: Request) -> str:
    cache = getattr(request.app.state, "statuses", None)
    statuses, problems = all_statuses(request.app.state.store, _catalog(request), cache)
    listing = PersonaList(
        data=statuses,
        problems=[PersonaProblem(persona=name, message=message) for name, message in problems.items()],
    )
    return listing.model_dump_json()


@router.get("/{name}", response_model=PersonaStatus, responses=error_responses(404))
async def get_persona(name: str, request: Request) -> PersonaStatus:
    """The persona now; one whose ``persona.yaml`` does not validate has status ``invalid card`` and
    the error naming the file and field."""
    try:
        return status_by_name(request.app.state.store, name)
    except StoreError as exc:
        raise store_error(exc) from None


@router.post("/uploads", response_model=PersonaUpload, status_code=201, responses=CHANGES)
async def upload(
    request: Request,
    files: list[UploadFile] = File(description="One or more chat exports, in any supported format."),
    name: str | None = Form(default=None, description="The persona the files are for, if known: the report "
                            "matches the character against it (and uses its card when it exists)."),
) -> PersonaUpload:  # fmt: skip
    """Stage chat exports and report what they give (formats, speakers, the character's turns, problems
    by file); nothing is stored in a persona until it is created from the upload or the files are added."""
    return await _uploads(request).stage([(f.filename or "", _chunks(f)) for f in files], name)


@router.post("", response_model=PersonaStatus, status_code=201, responses={**CHANGES, **EXISTS, **error_responses(503)})
async def create(request: Request, body: CreatePersonaRequest) -> PersonaStatus:
    """Create a persona from a staged upload: its files land in ``personas/<name>/logs/`` as uploaded,
    ``persona.yaml`` names the character when one is given (or was guessed), and training is queued."""
    training = actions.require_queue(_training(request)) if body.train else None
    persona = await _uploads(request).create(request.app.state.store, body.name, body.upload, body.character)
    if training is not None:
        actions.queue_training(training, persona, "api")
    return actions.status_of(request.app.state.store, persona.name)


@router.post("/{name}/logs", response_model=PersonaStatus, responses={**CHANGES, **EXISTS, **error_responses(503)})
async def add_logs(request: Request, name: str, body: AddLogsRequest) -> PersonaStatus:
    """Add a staged upload's files to the persona's logs (never replacing a file) and queue training."""
    training = actions.require_queue(_training(request)) if body.train else None
    persona = await _uploads(request).add(request.app.state.store, name, body.upload)
    if training is not None:
        actions.queue_training(training, persona, "api")
    return actions.status_of(request.app.state.store, persona.name)


@router.post("/{name}/train", response_model=Job, status_code=202, responses={**CHANGES, **error_responses(503)})
async def train(request: Request, name: str, body: TrainRequest | None = None) -> Job:
    """Queue a training run of the persona's logs (a run already waiting is reused)."""
    persona = actions.get_persona(request.app.state.store, name)
    return actions.queue_training(_training(request), persona, "api", force=bool(body and body.force))


@router.post("/{name}/rollback", response_model=PersonaStatus, responses=CHANGES)
async def roll_back(request: Request, name: str, body: VersionRequest | None = None) -> PersonaStatus:
    """Make an earlier version live; new requests use it at once, running ones finish on theirs."""
    return actions.roll_back(request.app.state.store, name, body.version if body else None)


@router.post("/{name}/promote", response_model=PersonaStatus, responses=CHANGES)
async def promote(request: Request, name: str, body: VersionRequest) -> PersonaStatus:
    """Make a version live, e.g. one the fidelity gate held back."""
    return actions.promote(request.app.state.store, name, body.version)


@router.put("/{name}/pin", response_model=PersonaStatus, responses=CHANGES)
async def pin(request: Request, name: str, body: PinRequest) -> PersonaStatus:
    """Pin or unpin the live version."""
    return actions.pin(request.app.state.store, name, body.pinned)


@router.delete("/{name}", response_model=PersonaDeleted, responses=CHANGES)
async def remove(request: Request, name: str) -> PersonaDeleted:
    """Take the persona out of service; its folder moves to ``.removed/`` in the personas folder."""
    return actions.remove(request.app.state.store, _training(request), name)
