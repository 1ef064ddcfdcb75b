"""Changing a persona: train, roll back, promote, pin, remove. The API routes and the page call these.

Each raises :class:`~service.errors.APIError` with the status and parameter a client's mistake
deserves (a store error is answered by :func:`~service.errors.store_error`, the same everywhere); the
page shows the same message. The store is the only state, so every replica sharing it sees a change
on its next request.
"""

from __future__ import annotations

from typing import Any

from store.adapters import rollback, set_pinned
from store.errors import InvalidName, StoreError, VersionNotFound
from store.jobs import Job, JobSource
from store.names import check_version
from store.registry import Persona, PersonaStore

from ..errors import NO_QUEUE, APIError, bad_request, require, store_error
from .protocol import PersonaDeleted, PersonaStatus
from .status import persona_status


def get_persona(store: PersonaStore, name: str) -> Persona:
    """The persona to change; a missing one is a 404, an invalid card the 409 naming file and field."""
    try:
        return store.get(name)
    except StoreError as exc:
        raise store_error(exc) from None


def status_of(store: PersonaStore, name: str) -> PersonaStatus:
    return persona_status(get_persona(store, name))


def _version(text: str | None) -> int | None:
    try:
        return None if text is None else check_version(text)
    except InvalidName as exc:
        raise bad_request(str(exc), "version", "invalid_value") from None


def require_queue(training: Any) -> Any:
    """The server's job queue, or the 503 (checked before a change that would then need it)."""
    return require(training, NO_QUEUE)


def queue_training(training: Any, persona: Persona, source: JobSource, force: bool = False) -> Job:
    """Queue a training run (a run of the persona already waiting is reused by automatic changes only)."""
    return require_queue(training).request(persona.name, source, force=force)


def roll_back(store: PersonaStore, name: str, version: str | None = None) -> PersonaStatus:
    """Make an earlier version live (the one before the live one by default)."""
    persona = get_persona(store, name)
    try:
        rollback(persona.path, _version(version))
    except VersionNotFound as exc:
        raise store_error(exc) from None
    except StoreError as exc:
        raise APIError(409, str(exc), "invalid_request_error", "version", "no_earlier_version") from None
    return status_of(store, name)


def promote(store: PersonaStore, name: str, version: str | None) -> PersonaStatus:
    """Make a given version live, e.g. one the fidelity gate held back."""
    if version is None:
        raise bad_request("version: name the version to make live, e.g. 'v3'", "version", "missing_required_parameter")
    persona = get_persona(store, name)
    try:
        rollback(persona.path, _version(version))
    except VersionNotFound as exc:
        raise store_error(exc) from None
    return status_of(store, name)


def pin(store: PersonaStore, name: str, pinned: bool) -> PersonaStatus:
    persona = get_persona(store, name)
    try:
        set_pinned(persona.path, pinned)
    except StoreError as exc:
        raise APIError(409, str(exc), "invalid_request_error", "pinned", "nothing_to_pin") from None
    return status_of(store, name)


def remove(store: PersonaStore, training: Any, name: str) -> PersonaDeleted:
    """Take the persona out of service (its folder moves to ``.removed/``); its waiting jobs are cancelled."""
    persona = get_persona(store, name)
    store.remove(persona.name)
    if training is not None:
        for job in training.jobs.queued():
            if job.persona == persona.name:
                training.cancel(job.id)
    return PersonaDeleted(id=persona.name)
