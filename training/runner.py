"""The one runner of a training job, however it was started (the watcher, the page, the API, the
fine-tuning API, ``persona train`` with or without a worker).

    job = run_job(settings, job_id)   # the worker's ``python -m training.job <id>`` and ``persona train``

In order: the pin rule (:func:`store.adapters.pin_effect`: an automatic job on a pinned persona is
skipped), the examples built once (:func:`training.ingest.persona_examples`), the skip rule (an
automatic job whose examples did not change), training, publishing beside the live version, the
fidelity gate (:func:`training.fidelity.judge_version`, which fails closed and writes ``gate.json``;
with a server, on held-out perplexity first, the version live meanwhile, then on the whole report),
then making the version live, keeping it live, or holding it back, with the outcome, the settings
used and the events in the job record. Errors in the data or settings end the job ``failed`` with the reason.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from store.adapters import PinEffect, list_versions, pin_effect, read_live, restore_live, set_live
from store.errors import BaseModelMismatch, StoreError
from store.fidelity_report import GateDecision, write_gate
from store.fingerprint import logs_fingerprint, write_seen
from store.jobs import Job, JobError, JobStore, this_process
from store.progress import TrainingProgress, write_progress
from store.registry import LOGS_DIR, Persona, PersonaStore

from .checkpoint import CheckpointMismatch
from .config import TrainConfig, TrainingError
from .fidelity import judge_version, settings_for
from .ingest import ExampleSet, IngestError, persona_examples
from .job_events import log_result, progress_writer
from .result import TrainResult
from .run import config_for, needs_training, train_persona

__all__ = ["Stopped", "run_job", "used_settings"]


class Stopped(BaseException):
    """SIGTERM reached the training process: the worker stops it after a cancel, or is itself ending.

    A ``BaseException``, so no handler for errors in the data or settings (nor the gate, which holds
    back a version on any ``Exception``) takes it for one of those.
    """


def used_settings(config: TrainConfig) -> dict[str, Any]:
    """What the jobs API reports as the run's hyperparameters."""
    return {
        "seed": config.seed,
        "epochs": config.epochs,
        "learning_rate": config.learning_rate,
        "batch_tokens": config.batch_tokens,
    }


def run_job(settings: Any, job_id: str, *, resume: bool = True, progress: bool = False) -> Job:
    """Run job ``job_id`` to its end in this process and return its final record.

    ``settings`` carries ``personas_dir``, ``base_model``, ``cache_dir``, ``allow_download``,
    ``max_lora_rank``, ``train_threads`` and ``eval_url`` (none: the gate judges in this process).
    ``resume`` continues an interrupted run's checkpoint when it was made from the same data and
    settings. ``progress`` shows progress bars on the terminal (``persona train``). Raises
    :class:`Stopped` only when SIGTERM arrives without a cancel.
    """
    jobs = JobStore(settings.personas_dir)
    job = jobs.update(job_id, **this_process())
    store = PersonaStore(settings.personas_dir)
    persona_path = store.get(job.persona).path
    # What this run sees; a change after this point queues another job.
    write_seen(persona_path, logs_fingerprint(persona_path / LOGS_DIR))
    live_before, versions_before = read_live(persona_path), list_versions(persona_path)
    try:
        effect = pin_effect(persona_path, job.automatic)
        if effect == "skip":
            return _unchanged(jobs, job_id, "unchanged: the persona is pinned to its live version")
        persona = store.get(job.persona)
        examples = persona_examples(persona)
        if job.automatic and not needs_training(settings, persona, examples):
            return _unchanged(jobs, job_id, "unchanged: the live version was trained on these examples")
        config = _config(settings, persona, job)
        jobs.update(job_id, used=used_settings(config))
        result = _train(settings, jobs, job, config, examples, resume, progress)
        decision, state = _gate(settings, jobs, job_id, store.get(job.persona), result, examples, effect, job.force)
    except (TrainingError, IngestError, StoreError) as exc:
        return _failed(jobs, job_id, exc)
    except Stopped:
        return _end_stopped(jobs, job_id, persona_path, live_before, versions_before)
    if jobs.get(job_id).cancel_requested:  # the cancel came while the version was being published
        return _end_stopped(jobs, job_id, persona_path, live_before, versions_before)
    log_result(jobs, job_id, result, decision, state)
    return jobs.update(
        job_id,
        status="succeeded",
        outcome="published" if decision.go_live else "held back",
        version=result.version,
        finished_at=time.time(),
        trained_tokens=int(result.tokens.get("seen_tokens", 0)),
        used={**used_settings(config), "epochs": result.epochs},
    )


def _unchanged(jobs: JobStore, job_id: str, reason: str) -> Job:
    jobs.log(job_id, reason)
    return jobs.update(job_id, status="succeeded", outcome="unchanged", finished_at=time.time())


def _failed(jobs: JobStore, job_id: str, exc: Exception) -> Job:
    jobs.log(job_id, str(exc), level="error")
    code = "invalid_training_data" if isinstance(exc, IngestError) else "training_failed"
    return jobs.update(job_id, status="failed", finished_at=time.time(), error=JobError(code=code, message=str(exc)))


def _config(settings: Any, persona: Persona, job: Job) -> TrainConfig:
    """The run's settings: card, the job's overrides (every source's, translated where it came in), threads."""
    config = config_for(persona, job.overrides)
    if settings.train_threads and "threads" not in job.overrides:
        config = config.replace(threads=settings.train_threads)
    return config


def _train(
    settings: Any, jobs: JobStore, job: Job, config: TrainConfig, examples: ExampleSet, resume: bool, progress: bool
) -> TrainResult:
    """Train and publish beside the live version, resuming an interrupted run's checkpoint when it was
    made from the same data and settings."""

    def attempt(resume: bool) -> TrainResult:
        return train_persona(
            settings,
            job.persona,
            config,
            max_lora_rank=settings.max_lora_rank,
            examples=examples,
            resume=resume,
            progress=progress,
            on_step=progress_writer(jobs, job.id),
            make_live=False,
            eval_url=settings.eval_url,
        )

    if not resume:
        return attempt(resume=False)
    try:
        return attempt(resume=True)
    except (CheckpointMismatch, BaseModelMismatch) as exc:
        jobs.log(job.id, f"Starting over: {exc}", level="warn")
        return attempt(resume=False)


def _gate(
    settings: Any,
    jobs: JobStore,
    job_id: str,
    persona: Persona,
    result: TrainResult,
    examples: ExampleSet,
    effect: PinEffect,
    force: bool,
) -> tuple[GateDecision, str]:
    """Judge the published version, make it live when the gate and the pin let it, and say what became of it.

    With a server to evaluate through and ``fidelity.gate.live_on_perplexity``, the version goes live
    on its held-out perplexity against the live version first (a first version at once) and the whole
    report follows; a version the report holds back is taken back to the one live before
    (:func:`_take_back`).
    """
    version = result.version
    assert version is not None

    def say(message: str) -> None:
        jobs.log(job_id, message)

    early: GateDecision | None = None
    if settings.eval_url and not force and _live_on_perplexity(persona):
        jobs.log(job_id, f"Deciding whether v{version} goes live before its whole report (in this process)")
        early = judge_version(settings, persona, version, examples, eval_url=settings.eval_url, first=True, say=say)
        if early.provisional and effect == "make live":
            set_live(persona.path, version)
            on = (
                f"its held-out perplexity against live {early.compared_with}"
                if early.compared_with
                else early.reasons[0]
            )
            jobs.log(job_id, f"v{version} is live ({on}); the whole report follows")
            _progress(persona, result, f"live v{version}; measuring its fidelity report")
    if early is not None and early.status == "unjudged":
        decision = early
    else:
        where = f"through {settings.eval_url}" if settings.eval_url else "in this process (held-out perplexity)"
        jobs.log(job_id, f"Evaluating v{version} {where}")
        decision = judge_version(settings, persona, version, examples, eval_url=settings.eval_url, force=force, say=say)
    if early is not None and early.provisional and effect == "make live" and not decision.go_live:
        decision = _take_back(persona, version, decision)
        jobs.log(job_id, decision.reasons[-1], level="warn")
    if decision.go_live and effect == "make live":
        set_live(persona.path, version)
        state = "published" + (" (unjudged)" if decision.status == "unjudged" else "")
    elif decision.go_live:
        state = "published beside the pinned version"
    else:
        state = "held back"
    _progress(persona, result, f"{state} v{version}", done=True)
    return decision, state


def _live_on_perplexity(persona: Persona) -> bool:
    try:
        return settings_for(persona).gate.live_on_perplexity
    except Exception:  # the whole report's gate names what is wrong with the settings
        return False


def _take_back(persona: Persona, version: int, decision: GateDecision) -> GateDecision:
    """The whole report held back a version that went live on its perplexity: the version live before
    it is live again (none: the card alone), unless someone made another one live meanwhile."""
    before = f"v{persona.live}" if persona.live is not None else "the card alone"
    if read_live(persona.path) == version:
        restore_live(persona.path, persona.live)
    reason = (
        f"v{version} was live on its held-out perplexity until its whole report held it back; {before} is live again"
    )
    taken = decision.model_copy(update={"taken_back": True, "reasons": [*decision.reasons, reason]})
    write_gate(persona.version_path(version), taken)
    return taken


def _progress(persona: Persona, result: TrainResult, message: str, *, done: bool = False) -> None:
    write_progress(persona.path, TrainingProgress(
        state="done" if done else "running", step=result.steps, total_steps=result.total_steps,
        train_loss=result.train_loss, eval_loss=result.eval_loss_after, tokens_per_s=round(result.tokens_per_s, 1),
        message=message,
    ))  # fmt: skip


def _end_stopped(
    jobs: JobStore, job_id: str, persona_path: Path, live_before: int | None, versions_before: list[int]
) -> Job:
    """End a run that a cancel stopped, with the persona's live version as it was before the run.

    SIGTERM without a cancel (the worker itself ending) ends the process by that signal, so the
    worker's record of how it ended stays the same.
    """
    if not jobs.get(job_id).cancel_requested:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    message = "Training stopped by the cancel"
    live = read_live(persona_path)
    if live != live_before and live_before is not None:
        set_live(persona_path, live_before)
    elif live != live_before:
        message += f"; v{live} went live before the cancel reached it"
    written = [v for v in list_versions(persona_path) if v not in versions_before]
    if written:
        message += f"; v{written[0]} was written before the cancel reached it and is not the job's result"
    write_progress(persona_path, TrainingProgress(state="failed", message="cancelled"))
    jobs.log(job_id, message)
    return jobs.cancel(job_id)
