"""What a persona is now, as the API and the chat page show it: card, versions, the gate's decisions,
training; and a persona whose card does not validate, shown with its error rather than hidden.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Hashable
from pathlib import Path

from store.adapters import is_pinned
from store.catalog import Catalog
from store.errors import CardError, StoreError
from store.fidelity_report import FidelityReport, GateDecision, TurnFigures, read_gate, read_report
from store.jobs import Job, JobStore
from store.names import version_name
from store.progress import read_progress
from store.registry import Persona, PersonaStore

from .protocol import FidelitySummary, PersonaStatus, VersionStatus

Problems = dict[str, str]
"""Persona name -> why its folder cannot be served."""


def _identity(report: FidelityReport, figure: Callable[[TurnFigures], float | None]) -> dict[str, float | None]:
    if report.identity is None:
        return {}
    return {**{k: figure(v) for k, v in report.identity.systems.items()}, "real": figure(report.identity.real)}


def _summary(report: FidelityReport, gate: GateDecision | None) -> FidelitySummary:
    systems = {"base": report.systems.base, "card": report.systems.card, "adapter": report.systems.adapter}
    return FidelitySummary(
        perplexity={k: v.perplexity for k, v in systems.items()},
        centroid_similarity={k: v.centroid_similarity for k, v in systems.items()},
        identity=_identity(report, lambda f: f.mean),
        identity_drift=_identity(report, lambda f: f.drift),
        gate=gate.status if gate else None,
        reasons=gate.reasons if gate else [],
    )


def _gate(path: Path, report: FidelityReport | None) -> GateDecision | None:
    """The gate's decision: its own record, else the one in the report (versions before ``gate.json``)."""
    return read_gate(path) or (report.gate if report else None)


def _versions(persona: Persona) -> list[VersionStatus]:
    versions = []
    for number in persona.versions:
        try:
            meta = persona.metadata(number)
        except StoreError:
            continue
        path = persona.version_path(number)
        report = read_report(path)
        gate = _gate(path, report)
        live = number == persona.live
        versions.append(
            VersionStatus(
                version=version_name(number),
                live=live,
                held_back=not live and gate is not None and gate.status == "held back",
                gate=gate,
                fidelity=_summary(report, gate) if report else None,
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
    versions = _versions(persona)
    live = next((v for v in versions if v.live), None)
    return PersonaStatus(
        name=persona.name,
        display_name=persona.title,
        description=persona.card.description,
        status=state,
        live_version=version_name(persona.live) if persona.live else None,
        versions=versions,
        greeting=persona.card.greeting,
        example_questions=persona.card.example_questions,
        training=progress or read_progress(persona.path),
        pinned=is_pinned(persona.path),
        job=active.id if active else None,
        queue_position=waiting.index(active.id) + 1 if active and active.id in waiting else None,
        last_failure=_last_failure(own),
        live_gate=live.gate.status if live is not None and live.gate is not None else None,
    )


def invalid_card_status(name: str, error: CardError) -> PersonaStatus:
    """A persona whose ``persona.yaml`` does not validate: listed with the error, not served."""
    return PersonaStatus(
        name=name,
        display_name=name,
        description="",
        status="invalid card",
        live_version=None,
        versions=[],
        greeting=None,
        example_questions=[],
        error=str(error),
    )


def status_by_name(store: PersonaStore, name: str, jobs: list[Job] | None = None) -> PersonaStatus:
    """One persona's status, an invalid card's included; raises the store's error for anything else
    (no such persona, a name that is not allowed)."""
    try:
        persona = store.get(name)
    except CardError as exc:
        return invalid_card_status(name, exc)
    return persona_status(persona, jobs)


SETTLED = ("card", "trained", "failed")
"""States a status may be kept in: nothing moves until a file or a job record changes."""


class StatusCache:
    """Statuses as last built, each built again only when the catalog's signature of its folder or the
    states of its jobs changed. A persona training or queued is always built afresh (its progress
    moves, and a training process that died reads as failed)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.builds = 0
        """Statuses built (a listing that found nothing changed builds none)."""
        self._lock = threading.Lock()
        self._known: dict[str, tuple[Hashable, PersonaStatus]] = {}

    def status(self, persona: Persona, jobs: list[Job], own: list[Job]) -> PersonaStatus:
        """``persona``'s status; ``jobs`` are every job record, ``own`` its own."""
        signature = self.catalog.signature_of(persona.name)
        key = (signature, tuple((job.id, job.status) for job in own))
        with self._lock:
            known = self._known.get(persona.name)
        if signature is not None and known is not None and known[0] == key:
            return known[1]
        status = persona_status(persona, jobs)
        self.builds += 1
        settled = status.status in SETTLED and (status.training is None or status.training.state != "running")
        with self._lock:
            if signature is not None and settled:
                self._known[persona.name] = (key, status)
            else:
                self._known.pop(persona.name, None)
        return status


def jobs_by_persona(jobs: list[Job]) -> defaultdict[str, list[Job]]:
    own: defaultdict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        own[job.persona].append(job)
    return own


def statuses_of(personas: list[Persona], jobs: list[Job], cache: StatusCache | None) -> list[PersonaStatus]:
    """The statuses of ``personas`` (through ``cache`` when given), the job records grouped once."""
    if cache is None:
        return [persona_status(persona, jobs) for persona in personas]
    own = jobs_by_persona(jobs)
    return [cache.status(persona, jobs, own[persona.name]) for persona in personas]


def all_statuses(
    store: PersonaStore, catalog: Catalog | None = None, cache: StatusCache | None = None
) -> tuple[list[PersonaStatus], Problems]:
    """Every persona folder's status (invalid cards included), and for each one that cannot be served
    the reason; the job records are read once for all of them, the folders through ``catalog`` when
    given (only those that changed are parsed again), the statuses through ``cache`` (only those
    whose folder or jobs changed are built again)."""
    jobs = JobStore(store.root).all()
    catalog = cache.catalog if cache is not None else catalog
    entries = catalog.entries() if catalog is not None else None
    statuses: list[PersonaStatus] = []
    problems: Problems = {}
    own = jobs_by_persona(jobs)
    for name in entries if entries is not None else store.names():
        try:
            if entries is None:
                statuses.append(status_by_name(store, name, jobs))
            elif cache is not None and isinstance(entries[name], Persona):
                statuses.append(cache.status(entries[name], jobs, own[name]))
            else:
                statuses.append(_entry_status(name, entries[name], jobs))
        except StoreError as exc:
            problems[name] = str(exc)
            continue
        if statuses[-1].error:
            problems[name] = statuses[-1].error
    return statuses, problems


def prebuild_statuses(store: PersonaStore, cache: StatusCache) -> None:
    """Every persona read and its status built ahead of the first listing (at start-up, off the loop):
    that listing then checks each folder but reads and builds only what changed since."""
    personas = [entry for entry in cache.catalog.refresh().values() if isinstance(entry, Persona)]
    statuses_of(personas, JobStore(store.root).all(), cache)


def _entry_status(name: str, entry: Persona | StoreError, jobs: list[Job]) -> PersonaStatus:
    if isinstance(entry, CardError):
        return invalid_card_status(name, entry)
    if isinstance(entry, StoreError):
        raise entry
    return persona_status(entry, jobs)
