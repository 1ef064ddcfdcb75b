"""``persona worker``: takes training jobs from the queue, one at a time, each in its own process.

The worker itself stays small and alive: it marks a job running, starts ``python -m training.job``
for it, watches it (cancellation, heartbeats) and records how it ended. A training process that dies
(killed, out of memory) therefore leaves a job marked ``failed`` with the signal that ended it, and the
persona's live version untouched; its checkpoint lets the next run of that persona resume.

On start it recovers jobs a previous worker left ``running`` (its process is gone): each is marked
failed and queued again once, so a restart of the machine loses no work.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from store.jobs import FINISHED, WORKER_BEAT_S, Job, JobError, JobQueue, JobStore, run_is_gone, submit
from store.settings import StoreSettings

log = logging.getLogger("persona.worker")

CANCEL_GRACE_S = 20.0
"""How long a cancelled training process may take to stop before it is killed."""


class WorkerSettings(StoreSettings):
    """Settings of ``persona worker`` (flags or ``PERSONA_*`` variables)."""

    model_config = SettingsConfigDict(env_prefix="PERSONA_", extra="ignore", use_attribute_docstrings=True)

    train_threads: int = Field(default=0, ge=0)
    """Torch threads of a training process; 0 = every core. A server that starts its own worker passes
    its share of the cores here."""
    train_nice: int = Field(default=10, ge=0, le=19)
    """Scheduling niceness of training processes: serving keeps priority on a shared machine."""
    eval_url: str | None = None
    """A server's ``/v1`` root through which new versions are evaluated before they go live (the
    fidelity gate); a server that starts its own worker passes its address. None: no gate."""
    eval_api_key: str | None = None
    """The key for ``eval_url`` when that server has API keys."""
    retries: int = Field(default=1, ge=0)
    """How often a job whose training process died is queued again (it resumes from its checkpoint)."""


def _job_command(job_id: str) -> list[str]:
    return [sys.executable, "-m", "training.job", job_id]


def _child_env(settings: WorkerSettings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PERSONA_PERSONAS_DIR": str(Path(settings.personas_dir).resolve()),
            "PERSONA_CACHE_DIR": str(Path(settings.cache_dir).resolve()),
            "PERSONA_BASE_MODEL": settings.base_model,
            "PERSONA_ALLOW_DOWNLOAD": "1" if settings.allow_download else "0",
            "PERSONA_MAX_LORA_RANK": str(settings.max_lora_rank),
            "PERSONA_TRAIN_THREADS": str(settings.train_threads),
        }
    )
    if settings.eval_url:
        env["PERSONA_EVAL_URL"] = settings.eval_url
    if settings.eval_api_key:
        env["PERSONA_EVAL_API_KEY"] = settings.eval_api_key
    return env


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class Worker:
    """Runs the jobs the queue hands over; see the module docstring."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.jobs = JobStore(settings.personas_dir)
        self.queue = JobQueue(settings.queue_url, settings.personas_dir, runner=self.run_job)

    def recover(self) -> None:
        """Jobs left running by a process that is gone: failed, and queued again within the retries."""
        for job in self.jobs.all():
            if run_is_gone(job):
                self._died(job, "the training process stopped while the worker was down")

    def run_job(self, job_id: str) -> None:
        job = self.jobs.claim(job_id)
        if job is None:
            return  # cancelled while queued, or already taken by another worker
        self.jobs.log(job.id, f"Training started (attempt {job.attempts})")
        process = subprocess.Popen(
            _job_command(job.id),
            env=_child_env(self.settings),
            preexec_fn=self._lower_priority,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.jobs.update(job.id, pid=process.pid, host=os.uname().nodename, heartbeat_at=time.time())
        stderr = self._wait(job.id, process)
        self._after(self.jobs.get(job.id), process.returncode, stderr)

    def _lower_priority(self) -> None:
        """In the training process before it starts: lower priority, and end with the worker."""
        os.nice(self.settings.train_nice)
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    def _wait(self, job_id: str, process: subprocess.Popen) -> str:
        """Wait for the training process, stopping it when the job is cancelled; its stderr's tail."""
        import threading

        tail: list[str] = []

        def drain() -> None:
            for line in process.stderr:
                tail.append(line)
                del tail[:-40]

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        cancelled_at = None
        while process.poll() is None:
            time.sleep(0.5)
            if cancelled_at is None and self.jobs.get(job_id).cancel_requested:
                cancelled_at = time.monotonic()
                process.terminate()
            elif cancelled_at is not None and time.monotonic() - cancelled_at > CANCEL_GRACE_S:
                process.kill()
        reader.join(timeout=5)
        return "".join(tail)

    def _after(self, job: Job, code: int, stderr: str) -> None:
        if job.cancel_requested:
            self.jobs.cancel(job.id)  # already cancelled when the cancel came through the store
            how = _signal_name(code) if code < 0 else f"exit code {code}"
            self.jobs.log(job.id, f"Training process stopped after the cancel ({how})")
        elif job.status in FINISHED:
            return  # the training process recorded its own end
        elif code < 0:
            self._died(job, f"the training process was killed ({_signal_name(code)})")
        else:
            last = stderr.strip().splitlines()[-1:] or ["no output"]
            self._died(job, f"the training process exited with code {code}: {last[0][:300]}")

    def _died(self, job: Job, reason: str) -> None:
        error = JobError(code="training_process_died", message=reason)
        self.jobs.update(job.id, status="failed", finished_at=time.time(), error=error)
        self.jobs.log(job.id, reason, level="error")
        log.warning("%s: %s", job.id, reason)
        if job.attempts <= self.settings.retries and not job.cancel_requested:
            again = submit(
                self.jobs,
                self.queue,
                job.persona,
                job.source,
                overrides=job.overrides,
                force=job.force,
                automatic=job.automatic,
                extra=job.extra,
                attempts=job.attempts,
            )
            self.jobs.log(job.id, f"Queued again as {again.id}; it resumes from the last checkpoint")

    def run(self) -> None:
        """Consume jobs until stopped (SIGINT or SIGTERM), saying it is alive every few seconds."""
        import threading

        self.recover()
        name = f"{os.uname().nodename}-{os.getpid()}"
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(WORKER_BEAT_S):
                with contextlib.suppress(OSError):
                    self.jobs.beat(name)

        self.jobs.beat(name)
        threading.Thread(target=beat, daemon=True).start()
        log.info("training worker on %s (queue %s)", self.settings.personas_dir, self.settings.queue_url)
        try:
            self.queue.consumer().run()
        finally:
            stop.set()
