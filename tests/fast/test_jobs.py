"""The job records, the embedded queue and the worker's handling of training processes.

The worker is real (huey's consumer, a child process per job); only the training command is a small
script standing in for ``python -m training.job``, so these tests need no model.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from store.errors import StoreError
from store.jobs import JobQueue, JobStore, submit
from store.serving_load import ServingLoad, server_busy
from tests.support.polling import wait_until
from training import worker as worker_module
from training.worker import Worker, WorkerSettings
from training.yielding import CpuYielder


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

    def start(script: Path, **settings) -> Worker:
        monkeypatch.setattr(worker_module, "_job_command", lambda job_id: [sys.executable, str(script), job_id])
        worker = Worker(
            WorkerSettings(personas_dir=personas, cache_dir=personas.parent / "cache", train_nice=0, **settings)
        )
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


def _state(pid: int) -> str:
    """The process's state letter from /proc: ``T`` when stopped."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_training_pauses_while_the_server_beside_it_answers_and_goes_on_after(tmp_path: Path, run_worker) -> None:
    counter, done = tmp_path / "steps", tmp_path / "done"
    load = ServingLoad(tmp_path / "serving" / "busy")
    worker = run_worker(
        _fake_training(
            tmp_path,
            (
                f"p, done = __import__('pathlib').Path({str(counter)!r}), __import__('pathlib').Path({str(done)!r})\n"
                "n = 0\n"
                "while not done.exists():\n    n += 1; p.write_text(str(n)); time.sleep(0.01)\n"
                "jobs.update(job_id, status='succeeded', outcome='published', version=1)\n"
            ),
        ),
        yield_to=load.path,
        yield_share=0.0,
    )
    job = submit(worker.jobs, worker.queue, "nova", "api")
    pid = wait_until(lambda: counter.exists() and worker.jobs.get(job.id).pid, what="training to start")

    load.started()  # a request starts generating
    load.started()
    load.finished()  # one of two ended: still busy
    wait_until(lambda: _state(pid) == "T", what="the training process to pause")
    paused_at = counter.read_text()
    time.sleep(1.2)
    assert counter.read_text() == paused_at and server_busy(load.path)

    load.finished()  # the server rests
    assert not server_busy(load.path)
    wait_until(lambda: counter.read_text() != paused_at, what="training to go on")
    done.touch()
    wait_until(lambda: worker.jobs.get(job.id).status == "succeeded", what="the job to succeed")
    wait_until(
        lambda: any("paused" in event.message for event in worker.jobs.events(job.id)),
        what="the job's log to say how long training paused",
    )


def test_a_paused_training_job_can_still_be_cancelled(tmp_path: Path, run_worker) -> None:
    load = ServingLoad(tmp_path / "busy")
    worker = run_worker(_fake_training(tmp_path, "time.sleep(60)\n"), yield_to=load.path, yield_share=0.0)
    job = submit(worker.jobs, worker.queue, "nova", "api")
    pid = wait_until(lambda: (j := worker.jobs.get(job.id)).status == "running" and j.pid, what="the job to run")
    load.started()
    wait_until(lambda: _state(pid) == "T", what="the training process to pause")
    worker.jobs.update(job.id, cancel_requested=True)
    wait_until(lambda: worker.jobs.get(job.id).status == "cancelled", what="the paused job to be cancelled")
    assert not _alive(pid)


def test_a_busy_server_still_leaves_training_its_share() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    now = [0.0]
    yielder = CpuYielder(sleeper.pid, busy=lambda: True, share=0.25, period_s=1.0, clock=lambda: now[0])
    try:
        states = []
        for _ in range(8):  # two periods in quarter-second ticks: paused three ticks, running one
            yielder.tick()
            states.append(yielder.paused)
            now[0] += 0.25
        assert states == [True, True, True, False] * 2
        yielder.tick()
        wait_until(lambda: _state(sleeper.pid) == "T", what="the process to stop")
        yielder.busy = lambda: False
        yielder.tick()
        assert not yielder.paused and yielder.paused_s == pytest.approx(1.5)
        wait_until(lambda: _state(sleeper.pid) != "T", what="the process to run again")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_busy_file_left_by_a_server_that_died_reads_as_idle(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path = tmp_path / "busy"
    path.write_text(str(gone.pid))
    assert not server_busy(path) and not server_busy(tmp_path / "missing")
    ServingLoad(path)  # a server starting again clears what its predecessor left
    assert not path.exists()


def test_time_a_training_process_spends_paused_is_not_counted_as_training(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, time\n"
            "from training.yielding import PauseClock\n"
            "clock = PauseClock()\n"
            f"pathlib.Path({str(ready)!r}).touch()\n"
            "end = time.monotonic() + 3.0\n"
            "while time.monotonic() < end:\n    sum(range(1000))\n"
            "clock.close(); print(round(clock.paused_s, 2))\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    wait_until(ready.exists, what="the child to start its clock")
    os.kill(child.pid, signal.SIGSTOP)
    time.sleep(1.0)
    os.kill(child.pid, signal.SIGCONT)
    out, _ = child.communicate(timeout=30)
    assert 0.7 <= float(out) <= 1.3, out
