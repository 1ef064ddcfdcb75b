"""Training jobs: the records both sides read, and the queue that hands them to the training worker.

Every way a persona changes (the folder watcher, the page, ``persona train``, the fine-tuning API)
creates a :class:`Job` here and submits its id to one :class:`JobQueue`; one worker
(``training.worker``) takes them one at a time. The server never imports the worker, nor the worker
the server: they share this module and the persona store.

Job records are JSON files in ``<personas>/.jobs/`` (written atomically, read-modify-write under a
file lock), so every replica and worker that sees the store sees the same jobs, their progress and
their events. The queue itself is `huey <https://huey.readthedocs.io>`_: an embedded SQLite file in
the same folder by default (nothing to install), or Redis for several machines (``queue_url``
``redis://host:6379/0``), with the same code.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from .errors import StoreError
from .files import atomic_write
from .fingerprint import logs_fingerprint, write_seen
from .names import check_name
from .progress import TrainingProgress
from .registry import LOGS_DIR

__all__ = ["Job", "JobError", "JobEvent", "JobStore", "JobQueue", "JOBS_DIR", "ACTIVE", "FINISHED"]

JOBS_DIR = ".jobs"
WORKER_BEAT_S = 5.0
"""How often a running worker records that it is alive."""
TASK_NAME = "persona_train"
"""The queue's one task: train (or check) the persona a job names."""

JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE = ("validating_files", "queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")
JobSource = Literal["watcher", "page", "cli", "api", "startup"]


class JobError(BaseModel):
    """Why a job failed, in the shape of OpenAI's fine-tuning job error."""

    code: str
    message: str
    param: str | None = None


class Job(BaseModel):
    """One training job, from any source, as the worker, the status endpoints and the page see it."""

    id: str
    persona: str
    source: JobSource
    status: JobStatus = "queued"
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Training settings for this run (``TrainConfig`` fields), on top of the card's."""
    force: bool = False
    """Publish even if the new version is worse than the live one."""
    automatic: bool = False
    """Started by a change in the logs; a pinned persona is not retrained by such a job."""
    progress: TrainingProgress | None = None
    """The training run's last report (written by the training process about once a second)."""
    version: int | None = None
    """The version this job published (or held back)."""
    outcome: str | None = None
    """``published``, ``held back`` or ``unchanged`` once it succeeded."""
    error: JobError | None = None
    trained_tokens: int | None = None
    used: dict[str, Any] = Field(default_factory=dict)
    """The settings the run really used once it started training (``seed``, ``epochs``,
    ``learning_rate``, ``batch_tokens``: card, overrides and defaults resolved; ``epochs`` the passes
    it made, once it finished)."""
    cancel_requested: bool = False
    pid: int | None = None
    host: str | None = None
    heartbeat_at: float | None = None
    attempts: int = 0
    extra: dict[str, Any] = Field(default_factory=dict)
    """What the fine-tuning API keeps with a job (files, suffix, hyperparameters, method)."""

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


class JobEvent(BaseModel):
    """One line of a job's log: progress, metrics, state changes."""

    created_at: float = Field(default_factory=time.time)
    level: Literal["info", "warn", "error"] = "info"
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] | None = None


class JobStore:
    """The job records under ``<personas>/.jobs``."""

    def __init__(self, personas_dir: Path) -> None:
        self.root = Path(personas_dir) / JOBS_DIR

    def _path(self, job_id: str) -> Path:
        if not job_id.startswith("ftjob-") or not job_id[6:].isalnum():
            raise StoreError(f"invalid job id {job_id!r}")
        return self.root / f"{job_id}.json"

    @contextmanager
    def _locked(self, job_id: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{job_id}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def create(self, persona: str, source: JobSource, **fields: Any) -> Job:
        job = Job(id=f"ftjob-{secrets.token_hex(12)}", persona=check_name(persona), source=source, **fields)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self._path(job.id), job.model_dump_json())
        self.log(job.id, f"Job created for persona '{persona}' ({source})")
        return job

    def get(self, job_id: str) -> Job:
        try:
            return Job.model_validate_json(self._path(job_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(f"no job {job_id!r}") from None

    def update(self, job_id: str, change: Callable[[Job], None] | None = None, **fields: Any) -> Job:
        """Read, change and write one record under its lock (the worker and the server both write)."""
        with self._locked(job_id):
            job = Job.model_validate({**self.get(job_id).model_dump(), **fields})
            if change is not None:
                change(job)
            atomic_write(self._path(job.id), job.model_dump_json())
            return job

    def claim(self, job_id: str) -> Job | None:
        """Mark a waiting job running (one more attempt); None when it was cancelled or taken meanwhile.

        Under the record's lock, so a cancel that lands while a worker takes the job is never lost.
        """
        with self._locked(job_id):
            job = self.get(job_id)
            if job.status not in ("validating_files", "queued"):
                return None
            if job.cancel_requested:
                job.status, job.finished_at = "cancelled", time.time()
                atomic_write(self._path(job.id), job.model_dump_json())
                return None
            job.status, job.started_at, job.attempts, job.error = "running", time.time(), job.attempts + 1, None
            atomic_write(self._path(job.id), job.model_dump_json())
            return job

    def cancel(self, job_id: str) -> Job:
        """Cancel a job that has not finished: it ends ``cancelled`` at once, whether it waits or runs.

        A running job's worker sees ``cancel_requested`` and stops its training process; the
        persona's live version stays as it was. The persona's logs as they are now count as seen, and waiting automatic
        jobs of the persona are withdrawn: they would train the same logs, so neither the folder
        watcher nor a restart brings the cancelled training back; the next change to the logs does.
        """
        if not self.get(job_id).active:
            return self.get(job_id)
        job = self._cancel_one(job_id)
        persona_path = self.root.parent / job.persona
        if (persona_path / LOGS_DIR).is_dir():
            write_seen(persona_path, logs_fingerprint(persona_path / LOGS_DIR))
        for other in self.queued():
            if other.persona == job.persona and other.automatic:
                self._cancel_one(other.id)
        return job

    def _cancel_one(self, job_id: str) -> Job:
        with self._locked(job_id):
            job = self.get(job_id)
            if not job.active:
                return job
            was = job.status
            job.status, job.cancel_requested, job.finished_at = "cancelled", True, time.time()
            atomic_write(self._path(job.id), job.model_dump_json())
        self.log(job_id, "Job cancelled; stopping its training process" if was == "running" else "Job cancelled")
        return job

    def all(self) -> list[Job]:
        """Every job, oldest first."""
        if not self.root.is_dir():
            return []
        jobs = []
        for path in self.root.glob("ftjob-*.json"):
            try:
                jobs.append(Job.model_validate_json(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue  # half-removed or foreign file: not a job
        return sorted(jobs, key=lambda j: (j.created_at, j.id))

    def for_persona(self, persona: str) -> list[Job]:
        return [job for job in self.all() if job.persona == persona]

    def queued(self) -> list[Job]:
        """Jobs waiting for the worker, in the order it takes them."""
        return [job for job in self.all() if job.status in ("validating_files", "queued")]

    def beat(self, worker: str) -> None:
        """A worker says it is alive (every few seconds while it runs)."""
        atomic_write(self.root / "workers" / f"{worker}.json", json.dumps({"at": time.time(), **this_process()}))

    def live_workers(self, within_s: float = WORKER_BEAT_S * 3) -> list[str]:
        """Workers that said they were alive recently (on any machine that shares the store)."""
        folder = self.root / "workers"
        if not folder.is_dir():
            return []
        now, alive = time.time(), []
        for path in folder.glob("*.json"):
            try:
                if now - json.loads(path.read_text(encoding="utf-8"))["at"] <= within_s:
                    alive.append(path.stem)
            except (OSError, ValueError, KeyError):
                continue
        return sorted(alive)

    def log(self, job_id: str, message: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
        event = JobEvent(message=message, level=level, type="metrics" if data else "message", data=data)
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{job_id}.events.jsonl", "a", encoding="utf-8") as handle:
            handle.write(event.model_dump_json() + "\n")

    def events(self, job_id: str) -> list[JobEvent]:
        path = self.root / f"{job_id}.events.jsonl"
        if not path.is_file():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(JobEvent.model_validate_json(line))
            except ValueError:
                continue  # a line cut by a crash
        return out


def this_process() -> dict[str, Any]:
    """Who is running a job: the fields a record carries so a dead run can be told from a live one."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "heartbeat_at": time.time()}


def run_is_gone(job: Job, stale_after_s: float = 600.0) -> bool:
    """A running job whose process is gone: dead on this host, or silent for too long elsewhere."""
    if job.status != "running":
        return False
    if job.host == socket.gethostname() and job.pid:
        try:
            os.kill(job.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return job.heartbeat_at is None or time.time() - job.heartbeat_at > stale_after_s


def _huey(url: str, personas_dir: Path):
    """The huey instance for ``url``: ``sqlite`` (a file beside the job records) or ``redis://...``."""
    from huey import RedisHuey, SqliteHuey

    if url == "sqlite":
        root = Path(personas_dir) / JOBS_DIR
        root.mkdir(parents=True, exist_ok=True)
        return SqliteHuey("persona", filename=str(root / "queue.sqlite3"), results=False)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey("persona", url=url, results=False)
    raise StoreError(f"queue_url must be 'sqlite' or a redis:// address, got {url!r}")


class JobQueue:
    """Job ids waiting for the training worker. The server submits; the worker passes ``runner``."""

    def __init__(self, url: str, personas_dir: Path, runner: Callable[[str], None] | None = None) -> None:
        self.huey = _huey(url, personas_dir)
        self.runner = runner
        self._task = self.huey.task(name=TASK_NAME)(self._run)

    def _run(self, job_id: str) -> None:
        if self.runner is None:
            raise RuntimeError("this process only submits jobs; `persona worker` runs them")
        self.runner(job_id)

    def submit(self, job_id: str) -> None:
        self._task(job_id)

    def pending(self) -> list[str]:
        """Job ids in the queue, next first."""
        return [task.args[0] for task in self.huey.pending()]

    def consumer(self):
        """Huey's consumer with one worker: one training job at a time on this machine."""
        return self.huey.create_consumer(
            workers=1, worker_type="thread", periodic=False, initial_delay=0.2, max_delay=2.0
        )


def submit(jobs: JobStore, queue: JobQueue, persona: str, source: JobSource, **fields: Any) -> Job:
    """Create a job record and queue it: how every source starts training."""
    job = jobs.create(persona, source, **fields)
    queue.submit(job.id)
    return job


def job_summary(job: Job) -> str:
    """One line for logs and the CLI."""
    where = f" {job.progress.fraction:.0%}" if job.status == "running" and job.progress else ""
    return f"{job.id} {job.persona} {job.status}{where}" + (f" ({job.error.message})" if job.error else "")
