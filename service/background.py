"""Background training as the server sees it: the worker process, the watcher, and queuing jobs.

The server never trains in its own process: it starts ``persona worker`` beside itself (unless
``--no-train``, for a replica that only serves), restarts it if it dies, and submits jobs to the
queue they share. Jobs come from the watcher (logs that changed), from start-up (personas whose logs
are new since their last job), and from the API and the page. New requests pick up a published
version by reading the store, as before; nothing here touches the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

from store.errors import StoreError
from store.fingerprint import logs_changed
from store.jobs import Job, JobQueue, JobSource, JobStore, submit
from store.registry import PersonaStore
from store.serving_load import ServingLoad

from .watcher import PersonaWatcher

log = logging.getLogger("persona.background")

RESTART_DELAY_S = (1.0, 30.0)
"""First and longest wait before a worker that died is started again."""


def has_logs(logs_dir: Path) -> bool:
    return logs_dir.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in logs_dir.rglob("*"))


class BackgroundTraining:
    """Owns the job queue's server side; see the module docstring."""

    def __init__(self, settings: Any, store: PersonaStore, load: ServingLoad | None = None) -> None:
        self.settings = settings
        self.store = store
        self.load = load
        """The server's busy file, handed to its worker so training yields while requests generate."""
        self.jobs = JobStore(settings.personas_dir)
        self.queue = JobQueue(settings.queue_url, settings.personas_dir)
        self.watcher = PersonaWatcher(settings.personas_dir, self.persona_changed, settle_s=settings.watch_settle_s)
        self._tasks: list[asyncio.Task] = []
        self._worker: asyncio.subprocess.Process | None = None
        self._stopping = False

    # --- life cycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.settings.train:
            self._tasks.append(asyncio.create_task(self._supervise_worker()))
        self._tasks.append(asyncio.create_task(self.watcher.run()))
        if self.settings.auto_train:
            await asyncio.to_thread(self.queue_changed_personas)

    async def stop(self) -> None:
        self._stopping = True
        self.watcher.stop()
        if self._worker and self._worker.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._worker.terminate()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._worker.wait(), timeout=10)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _worker_env(self) -> dict[str, str]:
        worker = self.settings.worker_settings()
        if self.load is not None:
            worker = worker.model_copy(update={"yield_to": self.load.path})
        return worker.child_env()

    async def _supervise_worker(self) -> None:
        delay = RESTART_DELAY_S[0]
        while not self._stopping:
            started = time.monotonic()
            self._worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cli.main", "worker", env=self._worker_env()
            )
            code = await self._worker.wait()
            if self._stopping:
                return
            log.warning("the training worker stopped (exit %s); starting it again in %.0f s", code, delay)
            await asyncio.sleep(delay)
            delay = RESTART_DELAY_S[0] if time.monotonic() - started > 60 else min(delay * 2, RESTART_DELAY_S[1])

    # --- jobs --------------------------------------------------------------------------------------
    def request(self, name: str, source: JobSource, *, automatic: bool = False, **fields: Any) -> Job:
        """Queue a training job for ``name``. A change in the logs is covered by any job of the
        persona that has not started yet (it reads the logs when it starts), so none is added."""
        persona = self.store.get(name)
        if automatic:
            for job in self.jobs.queued():
                if job.persona == persona.name:
                    return job
        return submit(self.jobs, self.queue, persona.name, source, automatic=automatic, **fields)

    def cancel(self, job_id: str) -> Job:
        return self.jobs.cancel(job_id)

    def queue_changed_personas(self) -> list[Job]:
        """Start-up: a job for every persona whose logs changed since its last job."""
        personas, _ = self.store.scan()
        return [
            self.request(p.name, "startup", automatic=True)
            for p in personas
            if has_logs(p.logs_dir) and logs_changed(p.path, p.logs_dir)
        ]

    async def persona_changed(self, name: str) -> None:
        """The watcher saw ``name``'s folder settle after a change."""
        try:
            persona = self.store.get(name)
        except StoreError:
            for job in self.jobs.queued():  # removed (or made unreadable): nothing left to train
                if job.persona == name:
                    self.cancel(job.id)
            return
        if self.settings.auto_train and has_logs(persona.logs_dir) and logs_changed(persona.path, persona.logs_dir):
            job = await asyncio.to_thread(self.request, name, "watcher", automatic=True)
            log.info("logs of %s changed: %s", name, job.id)

    def queue_position(self, job: Job) -> int | None:
        """1 for the next job the worker takes; None when not waiting."""
        waiting = [j.id for j in self.jobs.queued()]
        return waiting.index(job.id) + 1 if job.id in waiting else None
