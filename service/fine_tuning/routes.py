"""``/v1/files`` and ``/v1/fine_tuning/jobs``: OpenAI's fine-tuning API over the persona store.

A job with ``suffix="nova"`` creates (or retrains) the persona ``nova``: its training file is copied
into ``personas/nova/logs/``, its validation file (the held-out set the version is evaluated on) into
``personas/nova/validation/`` (a DPO job's files hold preference pairs: their preferred replies are
what is trained and held out), and the job joins the one queue every other source uses, so
``GET /v1/fine_tuning/jobs`` lists the watcher's, the page's and ``persona train``'s jobs as well.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from store.errors import StoreError
from store.jobs import Job
from store.preference import PREFERENCE_DIR, PreferenceFileError, parse_preference_file
from store.registry import LOGS_DIR, VALIDATION_DIR

from ..auth import require_key
from ..background import BackgroundTraining
from ..errors import NO_QUEUE, APIError, bad_request, require
from ..openapi import error_responses
from ..store_changes import marks_changes
from .files import FileStore, file_not_found, first_chat_jsonl_problem
from .jobs import (
    card_config,
    copy_into,
    copy_preference,
    copy_preferred,
    dpo_overrides,
    job_object,
    persona_for,
    preference_problem,
    requested_dpo_hyperparameters,
    requested_hyperparameters,
    training_overrides,
)
from .names import fine_tuned_model
from .protocol import (
    Checkpoint,
    CheckpointList,
    CheckpointMetrics,
    EventList,
    FileDeleted,
    FileList,
    FileObject,
    FineTuningJob,
    JobCreateRequest,
    JobEvent,
    JobList,
)

router = APIRouter(
    prefix="/v1",
    dependencies=[Depends(require_key), Depends(marks_changes)],
    responses=error_responses(400, 401, 404, 503),
    tags=["fine-tuning"],
)


def files_of(request: Request) -> FileStore:
    return request.app.state.files


def training_of(request: Request) -> BackgroundTraining:
    return require(getattr(request.app.state, "training", None), NO_QUEUE)


def _job_or_404(training: BackgroundTraining, job_id: str) -> Job:
    try:
        return training.jobs.get(job_id)
    except StoreError:
        raise APIError(
            404,
            f"No such fine-tuning job: {job_id}",
            "invalid_request_error",
            "fine_tuning_job_id",
            "fine_tuning_job_not_found",
        ) from None


# --- files -----------------------------------------------------------------------------------------
@router.post("/files", response_model=FileObject)
async def upload_file(request: Request, file: UploadFile = File(...), purpose: str = Form(...)) -> FileObject:
    if purpose != "fine-tune":
        raise bad_request(f"purpose: only 'fine-tune' files are accepted, got {purpose!r}", "purpose", "invalid_value")
    store = files_of(request)

    async def chunks():
        while chunk := await file.read(1 << 20):
            yield chunk

    saved = await store.save(file.filename or "upload.jsonl", chunks())
    path = store.content_path(saved.id)
    if _is_preference_file(path):
        try:
            parse_preference_file(path, label=saved.filename)
        except PreferenceFileError as exc:
            store.delete(saved.id)
            raise bad_request(str(exc), "file", "invalid_file_format") from None
        return saved
    problem = first_chat_jsonl_problem(path)
    if problem:
        store.delete(saved.id)
        raise bad_request(f"{saved.filename}: {problem[0]}", "file", "invalid_file_format")
    return saved


def _is_preference_file(path: Path) -> bool:
    """True when the file's first line is OpenAI's preference shape (it has ``preferred_output``)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = next((line for line in handle if line.strip()), "")
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and "preferred_output" in record


@router.get("/files", response_model=FileList)
async def list_files(
    request: Request,
    purpose: str | None = None,
    limit: int = Query(10000, ge=1, le=10000),
    after: str | None = None,
    order: str = Query("desc", pattern="^(asc|desc)$"),
) -> FileList:
    found = [f for f in files_of(request).all() if purpose in (None, f.purpose)]
    if order == "desc":
        found.reverse()
    if after:
        ids = [f.id for f in found]
        found = found[ids.index(after) + 1 :] if after in ids else []
    page = found[:limit]
    return FileList(
        data=page,
        has_more=len(found) > limit,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
    )


@router.get("/files/{file_id}", response_model=FileObject)
async def retrieve_file(request: Request, file_id: str) -> FileObject:
    return files_of(request).get(file_id)


@router.get("/files/{file_id}/content", response_class=FileResponse)
async def file_content(request: Request, file_id: str) -> FileResponse:
    store = files_of(request)
    return FileResponse(
        store.content_path(file_id), media_type="application/octet-stream", filename=store.get(file_id).filename
    )


@router.delete("/files/{file_id}", response_model=FileDeleted)
async def delete_file(request: Request, file_id: str) -> FileDeleted:
    files_of(request).delete(file_id)
    return FileDeleted(id=file_id)


# --- jobs ------------------------------------------------------------------------------------------
@router.post("/fine_tuning/jobs", response_model=FineTuningJob)
async def create_job(request: Request, body: JobCreateRequest) -> FineTuningJob:
    training = training_of(request)
    files = files_of(request)
    resolver = request.app.state.resolver
    hyper = requested_hyperparameters(body)
    dpo = requested_dpo_hyperparameters(body)
    name = persona_for(body, training, resolver.base_names())
    if body.model not in resolver.base_names() and body.model.partition("@")[0] != name:
        raise bad_request(
            f"model: '{body.model}' cannot be fine-tuned here; use the base model "
            f"'{resolver.base.id}' or the persona '{name}'",
            "model",
            "model_not_available",
        )
    for file_id, param in ((body.training_file, "training_file"), (body.validation_file, "validation_file")):
        if file_id is None:
            continue
        if dpo is not None:  # both files hold preference pairs, as OpenAI's DPO jobs take them
            message = preference_problem(files, file_id, param)
            if message:
                raise bad_request(message, param, "invalid_file_format")
            continue
        problem = first_chat_jsonl_problem(files.content_path(file_id, param))
        if problem:
            raise bad_request(f"{param} {file_id}: {problem[0]}", param, "invalid_file_format")
    persona = training.store.create(name)
    overrides = training_overrides(body, hyper, persona) | (dpo_overrides(dpo, persona) if dpo is not None else {})
    extra = {
        "model": body.model,
        "training_file": body.training_file,
        "validation_file": body.validation_file,
        "suffix": body.suffix,
        "hyperparameters": hyper.model_dump(),
        "dpo": dpo.model_dump() if dpo is not None else None,
        "metadata": body.metadata,
        "seed": overrides.get("seed", card_config(persona).seed),  # reported until the run records its own
    }
    job = training.jobs.create(name, "api", status="validating_files", overrides=overrides, extra=extra)
    if dpo is not None:
        copied = copy_preference(files, body.training_file, persona)
        training.jobs.log(
            job.id,
            f"Preference file {body.training_file} added to personas/{name}/{PREFERENCE_DIR} as {copied}, its "
            f"preferred replies to personas/{name}/{LOGS_DIR}",
        )
    else:
        copied = copy_into(files, body.training_file, Path(persona.logs_dir))
        training.jobs.log(job.id, f"Training file {body.training_file} added to personas/{name}/{LOGS_DIR} as {copied}")
    if body.validation_file is not None:
        folder = persona.path / VALIDATION_DIR
        copied = (
            copy_preferred(files, body.validation_file, folder)
            if dpo is not None
            else copy_into(files, body.validation_file, folder)
        )
        training.jobs.log(
            job.id,
            f"Validation file {body.validation_file} added to personas/{name}/{VALIDATION_DIR} as {copied}: "
            "the held-out set of this persona's evaluation",
        )
    job = training.jobs.update(job.id, status="queued")
    training.queue.submit(job.id)
    return job_object(job, resolver.base.id)


@router.get("/fine_tuning/jobs", response_model=JobList)
async def list_jobs(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100)) -> JobList:
    training = training_of(request)
    jobs = list(reversed(training.jobs.all()))
    if after:
        ids = [j.id for j in jobs]
        jobs = jobs[ids.index(after) + 1 :] if after in ids else []
    base = request.app.state.resolver.base.id
    return JobList(data=[job_object(j, base) for j in jobs[:limit]], has_more=len(jobs) > limit)


@router.get("/fine_tuning/jobs/{job_id}", response_model=FineTuningJob)
async def retrieve_job(request: Request, job_id: str) -> FineTuningJob:
    return job_object(_job_or_404(training_of(request), job_id), request.app.state.resolver.base.id)


@router.post("/fine_tuning/jobs/{job_id}/cancel", response_model=FineTuningJob)
async def cancel_job(request: Request, job_id: str) -> FineTuningJob:
    training = training_of(request)
    job = _job_or_404(training, job_id)
    if not job.active:
        raise bad_request(
            f"Job {job_id} has already {job.status} and cannot be cancelled",
            "fine_tuning_job_id",
            "job_not_cancellable",
        )
    return job_object(training.cancel(job_id), request.app.state.resolver.base.id)


@router.get("/fine_tuning/jobs/{job_id}/events", response_model=EventList)
async def job_events(
    request: Request, job_id: str, after: str | None = None, limit: int = Query(20, ge=1, le=1000)
) -> EventList:
    training = training_of(request)
    _job_or_404(training, job_id)
    events = [
        JobEvent(
            id=f"ftevent-{job_id[6:]}-{n}",
            created_at=int(e.created_at),
            level=e.level,
            message=e.message,
            data=e.data,
            type=e.type,
        )
        for n, e in enumerate(training.jobs.events(job_id))
    ]
    events.reverse()
    if after:
        ids = [e.id for e in events]
        events = events[ids.index(after) + 1 :] if after in ids else []
    return EventList(data=events[:limit], has_more=len(events) > limit)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints", response_model=CheckpointList)
async def job_checkpoints(request: Request, job_id: str) -> CheckpointList:
    training = training_of(request)
    job = _job_or_404(training, job_id)
    name = fine_tuned_model(job, request.app.state.resolver.base.id)
    if name is None:
        return CheckpointList(data=[])
    step = job.progress.step if job.progress else 0
    metrics = CheckpointMetrics(
        step=step,
        train_loss=job.progress.train_loss if job.progress else None,
        valid_loss=job.progress.eval_loss if job.progress else None,
    )
    point = Checkpoint(
        id=f"ftckpt-{job_id[6:]}-{step}",
        created_at=int(job.finished_at or job.created_at),
        fine_tuned_model_checkpoint=f"{name}:ckpt-step-{step}",
        fine_tuning_job_id=job_id,
        metrics=metrics,
        step_number=step,
    )
    return CheckpointList(data=[point], first_id=point.id, last_id=point.id)


__all__ = ["router", "job_object", "file_not_found"]
