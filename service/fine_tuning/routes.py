"""``/v1/files`` and ``/v1/fine_tuning/jobs``: OpenAI's fine-tuning API over the persona store.

A job with ``suffix="nova"`` creates (or retrains) the persona ``nova``: its training file is copied
into ``personas/nova/logs/``, its validation file (the held-out set the version is evaluated on) into
``personas/nova/validation/``, and the job joins the one queue every other source uses, so
``GET /v1/fine_tuning/jobs`` lists the watcher's, the page's and ``persona train``'s jobs as well.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from store.errors import InvalidName, StoreError
from store.jobs import Job
from store.names import check_name
from store.preference import PREFERENCE_DIR, PreferenceFileError, chat_line, parse_preference_file
from store.registry import LOGS_DIR, VALIDATION_DIR, Persona
from store.train_settings import TrainConfig

from ..auth import require_key
from ..background import BackgroundTraining
from ..errors import NO_QUEUE, APIError, bad_request, require
from ..openapi import error_responses
from .files import FileStore, file_not_found, first_chat_jsonl_problem
from .names import fine_tuned_model
from .protocol import (
    Checkpoint,
    CheckpointList,
    CheckpointMetrics,
    DpoHyperparameters,
    DpoMethod,
    EventList,
    FileDeleted,
    FileList,
    FileObject,
    FineTuningJob,
    Hyperparameters,
    JobCreateRequest,
    JobErrorObject,
    JobEvent,
    JobList,
    Method,
    SupervisedMethod,
)

router = APIRouter(
    prefix="/v1",
    dependencies=[Depends(require_key)],
    responses=error_responses(400, 401, 404, 503),
    tags=["fine-tuning"],
)
BATCH_TOKENS_PER_EXAMPLE = 256
"""``batch_size`` counts examples; batches here are packed by tokens, so a batch of N examples becomes
a budget of N x this many tokens."""


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
def job_object(job: Job, base_id: str) -> FineTuningJob:
    """Any job of the queue, whatever its source, as OpenAI's ``fine_tuning.job``."""
    extra = job.extra
    progress = job.progress if job.status == "running" else None
    finish = progress.updated_at + progress.eta_s if progress and progress.eta_s is not None else None
    return FineTuningJob(
        id=job.id,
        created_at=int(job.created_at),
        status=job.status,
        persona=job.persona,
        source=job.source,
        error=JobErrorObject(**job.error.model_dump()) if job.error else None,
        fine_tuned_model=fine_tuned_model(job, base_id),
        finished_at=int(job.finished_at) if job.finished_at else None,
        hyperparameters=_reported_hyperparameters(job),
        model=extra.get("model", base_id),
        seed=int(job.used.get("seed", job.overrides.get("seed", extra.get("seed", TrainConfig().seed)))),
        trained_tokens=job.trained_tokens,
        training_file=extra.get("training_file", f"personas/{job.persona}/logs"),
        validation_file=extra.get("validation_file"),
        metadata=extra.get("metadata"),
        user_provided_suffix=extra.get("suffix"),
        estimated_finish=int(finish) if finish else None,
        method=_reported_method(job),
    )


def _reported_method(job: Job) -> Method:
    """The job's method in OpenAI's shape: supervised unless it was created as a DPO job."""
    dpo = job.extra.get("dpo")
    if dpo is not None:
        return Method(type="dpo", dpo=DpoMethod(hyperparameters=DpoHyperparameters(**dpo)))
    return Method(type="supervised", supervised=SupervisedMethod(hyperparameters=_reported_hyperparameters(job)))


def _reported_hyperparameters(job: Job) -> Hyperparameters:
    """The hyperparameters asked for, with the passes the run really made once it finished."""
    asked = Hyperparameters(**job.extra.get("hyperparameters", {}))
    if asked.n_epochs == "auto" and isinstance(job.used.get("epochs"), int):
        asked = asked.model_copy(update={"n_epochs": job.used["epochs"]})
    return asked


def _overrides(body: JobCreateRequest, hyper: Hyperparameters, persona: Persona) -> dict[str, Any]:
    """OpenAI's hyperparameters as the training settings any other run is given (``TrainConfig`` fields).

    The learning rate multiplier scales the persona's own rate (defaults, then its card's ``training:``).
    """
    overrides: dict[str, Any] = {}
    if body.seed is not None:
        overrides["seed"] = body.seed
    if hyper.n_epochs != "auto":
        overrides["epochs"] = hyper.n_epochs
    if hyper.batch_size != "auto":
        overrides["batch_tokens"] = hyper.batch_size * BATCH_TOKENS_PER_EXAMPLE
    if hyper.learning_rate_multiplier != "auto":
        rate = _card_config(persona).learning_rate
        overrides["learning_rate"] = min(rate * hyper.learning_rate_multiplier, 1.0)
    return overrides


def _dpo_overrides(dpo: DpoHyperparameters, persona: Persona) -> dict[str, Any]:
    """OpenAI's DPO hyperparameters as the preference stage's settings (``preference`` turned on)."""
    overrides: dict[str, Any] = {"preference": True}
    if dpo.beta != "auto":
        overrides["preference_beta"] = dpo.beta
    if dpo.n_epochs != "auto":
        overrides["preference_epochs"] = dpo.n_epochs
    if dpo.batch_size != "auto":
        overrides["preference_pairs_per_step"] = dpo.batch_size
    if dpo.learning_rate_multiplier != "auto":
        rate = _card_config(persona).preference_learning_rate
        overrides["preference_learning_rate"] = min(rate * dpo.learning_rate_multiplier, 1.0)
    return overrides


def _card_config(persona: Persona) -> TrainConfig:
    try:
        return TrainConfig.from_overrides(persona.card.training, card_label=str(persona.path / "persona.yaml"))
    except ValueError as exc:
        raise bad_request(str(exc), "suffix", "invalid_persona_card") from exc


def _persona_for(body: JobCreateRequest, training: BackgroundTraining, base_names: list[str]) -> str:
    """The persona a new job trains: its suffix, else the persona named as ``model``."""
    if body.suffix is not None:
        try:
            return check_name(body.suffix)
        except InvalidName as exc:
            raise bad_request(f"suffix: {exc}", "suffix", "invalid_value") from None
    if body.model not in base_names:
        try:
            return training.store.get(body.model.partition("@")[0]).name
        except StoreError:
            pass
    raise bad_request(
        "suffix: name the persona to create, e.g. suffix='nova' (or give a persona as model)",
        "suffix",
        "missing_required_parameter",
    )


def _hyperparameters(body: JobCreateRequest) -> Hyperparameters:
    if body.method is not None and body.method.type not in ("supervised", "dpo"):
        raise bad_request(
            f"method.type: 'supervised' and 'dpo' fine-tuning are offered, got {body.method.type!r}",
            "method.type",
            "unsupported_value",
        )
    method = body.method.supervised.hyperparameters if body.method and body.method.supervised else None
    chosen = method or body.hyperparameters or Hyperparameters()
    _check_common(chosen, "hyperparameters")
    return chosen


def _dpo_hyperparameters(body: JobCreateRequest) -> DpoHyperparameters | None:
    """The DPO hyperparameters of a ``method.type == "dpo"`` job (None for a supervised one)."""
    if body.method is None or body.method.type != "dpo":
        return None
    dpo = body.method.dpo.hyperparameters if body.method.dpo and body.method.dpo.hyperparameters else None
    dpo = dpo or DpoHyperparameters()
    where = "method.dpo.hyperparameters"
    _check_common(dpo, where)
    if dpo.beta != "auto" and not 0 < dpo.beta <= 2:
        raise bad_request(f"{where}.beta: must be 'auto' or above 0 and at most 2, got {dpo.beta}", f"{where}.beta")
    return dpo


def _check_common(chosen: Hyperparameters | DpoHyperparameters, where: str) -> None:
    for field in ("n_epochs", "batch_size"):
        value = getattr(chosen, field)
        if value != "auto" and not 1 <= value <= 50:
            raise bad_request(f"{where}.{field}: must be 'auto' or 1 to 50, got {value}", f"{where}.{field}")
    rate = chosen.learning_rate_multiplier
    if rate != "auto" and not 0 < rate <= 10:
        raise bad_request(
            f"{where}.learning_rate_multiplier: must be 'auto' or above 0 and at most 10, got {rate}",
            f"{where}.learning_rate_multiplier",
        )


def _preference_problem(files: FileStore, file_id: str, param: str) -> str | None:
    try:
        parse_preference_file(files.content_path(file_id, param), label=f"{param} {file_id}")
    except PreferenceFileError as exc:
        return str(exc)
    return None


def _copy_preference(files: FileStore, file_id: str, persona: Persona) -> str:
    """A preference file into the persona: the pairs into its preference folder, the preferred replies
    into its logs as chat JSONL (the supervised examples)."""
    source = files.content_path(file_id)
    name = f"{file_id}-{Path(files.get(file_id).filename).stem}.jsonl"
    folder = persona.path / PREFERENCE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, folder / name)
    lines = [json.dumps(chat_line(pair), ensure_ascii=False) for pair in parse_preference_file(source)]
    logs = Path(persona.logs_dir)
    logs.mkdir(parents=True, exist_ok=True)
    (logs / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return name


def _copy_into(files: FileStore, file_id: str, folder: Path) -> str:
    """Copy an uploaded file into a persona's folder, named by its id (so one upload is one file)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{file_id}-{files.get(file_id).filename}"
    shutil.copyfile(files.content_path(file_id), target)
    return target.name


@router.post("/fine_tuning/jobs", response_model=FineTuningJob)
async def create_job(request: Request, body: JobCreateRequest) -> FineTuningJob:
    training = training_of(request)
    files = files_of(request)
    resolver = request.app.state.resolver
    hyper = _hyperparameters(body)
    dpo = _dpo_hyperparameters(body)
    name = _persona_for(body, training, resolver.base_names())
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
        if dpo is not None and param == "training_file":
            message = _preference_problem(files, file_id, param)
            if message:
                raise bad_request(message, param, "invalid_file_format")
            continue
        problem = first_chat_jsonl_problem(files.content_path(file_id, param))
        if problem:
            raise bad_request(f"{param} {file_id}: {problem[0]}", param, "invalid_file_format")
    persona = training.store.create(name)
    overrides = _overrides(body, hyper, persona) | (_dpo_overrides(dpo, persona) if dpo is not None else {})
    extra = {
        "model": body.model,
        "training_file": body.training_file,
        "validation_file": body.validation_file,
        "suffix": body.suffix,
        "hyperparameters": hyper.model_dump(),
        "dpo": dpo.model_dump() if dpo is not None else None,
        "metadata": body.metadata,
        "seed": overrides.get("seed", _card_config(persona).seed),  # reported until the run records its own
    }
    job = training.jobs.create(name, "api", status="validating_files", overrides=overrides, extra=extra)
    if dpo is not None:
        copied = _copy_preference(files, body.training_file, persona)
        training.jobs.log(
            job.id,
            f"Preference file {body.training_file} added to personas/{name}/{PREFERENCE_DIR} as {copied}, its "
            f"preferred replies to personas/{name}/{LOGS_DIR}",
        )
    else:
        copied = _copy_into(files, body.training_file, Path(persona.logs_dir))
        training.jobs.log(job.id, f"Training file {body.training_file} added to personas/{name}/{LOGS_DIR} as {copied}")
    if body.validation_file is not None:
        copied = _copy_into(files, body.validation_file, persona.path / VALIDATION_DIR)
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
