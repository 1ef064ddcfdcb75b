"""OpenAI's fine-tuning jobs translated to and from the one job queue: a request's method and
hyperparameters become training overrides, its files are copied into the persona's folder, and any job
of the queue is reported as OpenAI's ``fine_tuning.job``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from store.errors import InvalidName, StoreError
from store.jobs import Job
from store.names import check_name
from store.preference import PREFERENCE_DIR, PreferenceFileError, chat_line, parse_preference_file
from store.registry import Persona
from store.train_settings import TrainConfig

from ..background import BackgroundTraining
from ..errors import bad_request
from .files import FileStore
from .names import fine_tuned_model
from .protocol import (
    DpoHyperparameters,
    DpoMethod,
    FineTuningJob,
    Hyperparameters,
    JobCreateRequest,
    JobErrorObject,
    Method,
    SupervisedMethod,
)

BATCH_TOKENS_PER_EXAMPLE = 256
"""``batch_size`` counts examples; batches here are packed by tokens, so a batch of N examples becomes
a budget of N x this many tokens."""


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


def training_overrides(body: JobCreateRequest, hyper: Hyperparameters, persona: Persona) -> dict[str, Any]:
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
        rate = card_config(persona).learning_rate
        overrides["learning_rate"] = min(rate * hyper.learning_rate_multiplier, 1.0)
    return overrides


def dpo_overrides(dpo: DpoHyperparameters, persona: Persona) -> dict[str, Any]:
    """OpenAI's DPO hyperparameters as the preference stage's settings (``preference`` turned on)."""
    overrides: dict[str, Any] = {"preference": True}
    if dpo.beta != "auto":
        overrides["preference_beta"] = dpo.beta
    if dpo.n_epochs != "auto":
        overrides["preference_epochs"] = dpo.n_epochs
    if dpo.batch_size != "auto":
        overrides["preference_pairs_per_step"] = dpo.batch_size
    if dpo.learning_rate_multiplier != "auto":
        rate = card_config(persona).preference_learning_rate
        overrides["preference_learning_rate"] = min(rate * dpo.learning_rate_multiplier, 1.0)
    return overrides


def card_config(persona: Persona) -> TrainConfig:
    try:
        return TrainConfig.from_overrides(persona.card.training, card_label=str(persona.path / "persona.yaml"))
    except ValueError as exc:
        raise bad_request(str(exc), "suffix", "invalid_persona_card") from exc


def persona_for(body: JobCreateRequest, training: BackgroundTraining, base_names: list[str]) -> str:
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


def requested_hyperparameters(body: JobCreateRequest) -> Hyperparameters:
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


def requested_dpo_hyperparameters(body: JobCreateRequest) -> DpoHyperparameters | None:
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


def preference_problem(files: FileStore, file_id: str, param: str) -> str | None:
    try:
        parse_preference_file(files.content_path(file_id, param), label=f"{param} {file_id}")
    except PreferenceFileError as exc:
        return str(exc)
    return None


def copy_preference(files: FileStore, file_id: str, persona: Persona) -> str:
    """A preference file into the persona: the pairs into its preference folder, the preferred replies
    into its logs as chat JSONL (the supervised examples)."""
    name = _upload_name(files, file_id)
    folder = persona.path / PREFERENCE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(files.content_path(file_id), folder / name)
    return copy_preferred(files, file_id, Path(persona.logs_dir))


def copy_preferred(files: FileStore, file_id: str, folder: Path) -> str:
    """A preference file's preferred replies into ``folder`` as chat JSONL: the supervised examples of
    a training file, the held-out conversations of a validation file."""
    name = _upload_name(files, file_id)
    lines = [
        json.dumps(chat_line(pair), ensure_ascii=False) for pair in parse_preference_file(files.content_path(file_id))
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return name


def _upload_name(files: FileStore, file_id: str) -> str:
    return f"{file_id}-{Path(files.get(file_id).filename).stem}.jsonl"


def copy_into(files: FileStore, file_id: str, folder: Path) -> str:
    """Copy an uploaded file into a persona's folder, named by its id (so one upload is one file)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{file_id}-{files.get(file_id).filename}"
    shutil.copyfile(files.content_path(file_id), target)
    return target.name
