"""The job records, the embedded queue and the worker's handling of training processes.

The worker is real (huey's consumer, a child process per job); only the training command is a small
script standing in for ``python -m training.job``, so these tests need no model.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path

import pytest

from store.errors import StoreError
from store.jobs import JobQueue, JobStore, submit
from tests.support.polling import wait_until
from training import worker as worker_module
from training.worker import Worker, WorkerSettings


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture()
def personas(tmp_path: Path) -> Path:
    root = tmp_path / "personas"
    (root / "nova" / "logs").mkdir(parents=True)
    return root


def test_records_survive_reads_updates_and_keep_events(personas: Path) -> None:
    jobs = JobStore(personas)
    job = jobs.create("nova", "cli", overrides={"max_steps": 2})
    assert jobs.get(job.id).status == "queued" and jobs.get(job.id).overrides == {"max_steps": 2}
    jobs.update(job.id, status="running", change=lambda j: j.extra.update(suffix="nova"))
    again = jobs.get(job.id)
    assert again.status == "running" and again.extra == {"suffix": "nova"}
    jobs.log(job.id, "step 1", data={"loss": 1.5})
    assert [e.message for e in jobs.events(job.id)][-1] == "step 1"
    assert [j.id for j in jobs.all()] == [job.id]
    with pytest.raises(StoreError, match="invalid job id"):
        jobs.get("../../etc/passwd")
    with pytest.raises(StoreError, match="invalid persona name"):
        jobs.create("../x", "cli")


def test_the_embedded_queue_is_durable_and_ordered(personas: Path) -> None:
    jobs = JobStore(personas)
    first = submit(jobs, JobQueue("sqlite", personas), "nova", "cli")
    second = submit(jobs, JobQueue("sqlite", personas), "nova", "page")
    # Another process opening the same queue (a restarted server) finds both, in order.
    assert JobQueue("sqlite", personas).pending() == [first.id, second.id]
    with pytest.raises(StoreError, match="queue_url"):
        JobQueue("amqp://x", personas)


def _fake_training(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake_job.py"
    script.write_text(
        "import sys, time\n"
        "from store.jobs import JobStore\n"
        "import os\n"
        "jobs = JobStore(os.environ['PERSONA_PERSONAS_DIR'])\n"
        "job_id = sys.argv[1]\n" + body
    )
    return script


@pytest.fixture()
def run_worker(personas: Path, monkeypatch):
    """Start a real worker (huey consumer in a thread) whose training command is ``script``."""
    started: list[Worker] = []

    def start(script: Path) -> Worker:
        monkeypatch.setattr(worker_module, "_job_command", lambda job_id: [sys.executable, str(script), job_id])
        worker = Worker(WorkerSettings(personas_dir=personas, cache_dir=personas.parent / "cache", train_nice=0))
        consumer = worker.queue.consumer()
        consumer._set_signal_handlers = lambda: None  # signals belong to the main thread, here pytest's
        thread = threading.Thread(target=consumer.start, daemon=True)
        thread.start()
        started.append((worker, consumer))
        return worker

    yield start
    for _, consumer in started:
        consumer.stop(graceful=False)


def test_a_job_runs_in_its_own_process_and_records_its_end(tmp_path: Path, run_worker) -> None:
    worker = run_worker(
        _fake_training(tmp_path, "jobs.update(job_id, status='succeeded', version=3, outcome='published')\n")
    )
    job = submit(worker.jobs, worker.queue, "nova", "cli")
    done = wait_until(lambda: (j := worker.jobs.get(job.id)).status == "succeeded" and j, what="the job to succeed")
    assert done.version == 3 and done.pid and done.attempts == 1 and done.started_at


def test_a_killed_training_process_fails_the_job_with_the_signal_and_is_queued_again(
    tmp_path: Path, run_worker
) -> None:
    marker = tmp_path / "attempts"
    worker = run_worker(
        _fake_training(
            tmp_path,
            (
                f"p = __import__('pathlib').Path({str(marker)!r}); n = int(p.read_text()) if p.exists() else 0\n"
                "p.write_text(str(n + 1))\n"
                "if n == 0:\n    os.kill(os.getpid(), 9)\n"
                "jobs.update(job_id, status='succeeded', outcome='published', version=1)\n"
            ),
        )
    )
    job = submit(worker.jobs, worker.queue, "nova", "watcher", automatic=True)
    failed = wait_until(lambda: (j := worker.jobs.get(job.id)).status == "failed" and j, what="the job to fail")
    assert failed.error.code == "training_process_died" and "SIGKILL" in failed.error.message
    retry = wait_until(
        lambda: [j for j in worker.jobs.all() if j.id != job.id and j.status == "succeeded"],
        what="the retry to succeed",
    )
    assert retry[0].persona == "nova" and retry[0].automatic and retry[0].attempts == 2


def test_cancelling_a_running_job_stops_its_process(tmp_path: Path, run_worker) -> None:
    worker = run_worker(_fake_training(tmp_path, "time.sleep(60)\n"))
    job = submit(worker.jobs, worker.queue, "nova", "api")
    running = wait_until(
        lambda: (j := worker.jobs.get(job.id)).status == "running" and j.pid and j, what="the job to run"
    )
    worker.jobs.update(job.id, cancel_requested=True)
    cancelled = wait_until(
        lambda: (j := worker.jobs.get(job.id)).status == "cancelled" and j, what="the job to be cancelled"
    )
    assert cancelled.finished_at and not _alive(running.pid)


def test_a_job_left_running_by_a_dead_worker_is_failed_and_queued_again(personas: Path) -> None:
    jobs = JobStore(personas)
    job = jobs.create("nova", "cli")
    jobs.update(job.id, status="running", pid=2**22 + 12345, host=socket.gethostname(), attempts=1)
    worker = Worker(WorkerSettings(personas_dir=personas, cache_dir=personas.parent / "cache"))
    worker.recover()
    assert jobs.get(job.id).status == "failed"
    assert len(worker.queue.pending()) == 1 and worker.queue.pending()[0] != job.id
