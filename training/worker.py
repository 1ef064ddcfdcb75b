"""``persona worker``: takes training jobs from the queue, one at a time, each in its own process.

The worker itself stays small and alive: it marks a job running, starts ``python -m training.job``
for it, watches it (cancellation, heartbeats) and records how it ended. A training process that dies
(killed, out of memory) therefore leaves a job marked ``failed`` with the signal that ended it, and the
persona's live version untouched; its checkpoint lets the next run of that persona resume.

On start it recovers jobs a previous worker left ``running`` (its process is gone): each is marked
failed and queued again once, so a restart of the machine loses no work.

Beside a server (``yield_to``), the worker pauses the training process while the server is generating
(:mod:`training.yielding`), so a user chatting keeps the CPU.
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

from store.jobs import FINISHED, WORKER_BEAT_S, Job, JobError, JobQueue, JobStore, run_is_gone, submit
from store.serving_load import server_busy
from store.settings import WorkerSettings

from .yielding import TICK_S, CpuYielder, wake

__all__ = ["Worker", "WorkerSettings"]

log = logging.getLogger("persona.worker")

CANCEL_GRACE_S = 20.0
"""How long a cancelled training process may take to stop before it is killed."""
CANCEL_CHECK_S = 0.5
"""How often the worker reads the job's record for a cancel while its training process runs."""


def _job_command(job_id: str) -> list[str]:
    return [sys.executable, "-m", "training.job", job_id]


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
        self._yielders: set[CpuYielder] = set()

    def recover(self) -> None:
        """Jobs left running by a process that is gone: failed, and queued again within the retries."""
        for job in self.jobs.all():
            if job.status == "running" and job.pid and job.host == os.uname().nodename:
                wake(job.pid)  # paused when that worker ended: let it see the signal that ends it
            if run_is_gone(job):
                self._died(job, "the training process stopped while the worker was down")

    def run_job(self, job_id: str) -> None:
        job = self.jobs.claim(job_id)
        if job is None:
            return  # cancelled while queued, or already taken by another worker
        self.jobs.log(job.id, f"Training started (attempt {job.attempts})")
        process = subprocess.Popen(
            _job_command(job.id),
            env=self.settings.child_env(),
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
        yielder = self._yielder(process.pid)
        if yielder:
            self._yielders.add(yielder)
        cancelled_at = None
        checked = time.monotonic()
        try:
            while process.poll() is None:
                time.sleep(TICK_S if yielder else CANCEL_CHECK_S)
                if yielder and cancelled_at is None:
                    yielder.tick()
                if time.monotonic() - checked < CANCEL_CHECK_S:
                    continue
                checked = time.monotonic()
                if cancelled_at is None and self.jobs.get(job_id).cancel_requested:
                    cancelled_at = time.monotonic()
                    if yielder:
                        yielder.resume()
                    process.terminate()
                elif cancelled_at is not None and time.monotonic() - cancelled_at > CANCEL_GRACE_S:
                    process.kill()
        finally:
            if yielder:
                yielder.resume()
                self._yielders.discard(yielder)
        if yielder and yielder.paused_s >= 1:
            self.jobs.log(job_id, f"Training paused {yielder.paused_s:.0f} s in all while the server was answering")
        reader.join(timeout=5)
        return "".join(tail)

    def _yielder(self, pid: int) -> CpuYielder | None:
        path = self.settings.yield_to
        if path is None or self.settings.yield_share >= 1:
            return None
        return CpuYielder(pid, lambda: server_busy(path), self.settings.yield_share)

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
            for yielder in list(self._yielders):  # a paused training process must see the signal that ends it
                yielder.resume()
