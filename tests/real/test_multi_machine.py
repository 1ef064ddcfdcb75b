"""Beyond one machine: a serving replica with ``--no-train`` and a separate ``persona worker`` share one
persona store and one queue in Debian's redis-server; jobs created through OpenAI's fine-tuning API
are trained by the worker (or cancelled through the replica: the worker stops them) and served by the
replica."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS, REPO, LiveServer, _free_port
from tests.support.polling import wait_until

pytestmark = pytest.mark.real


@pytest.fixture()
def redis_url(tmp_path: Path):
    executable = shutil.which("redis-server")
    assert executable, "redis-server is missing: `make test` installs Debian's redis-server"
    port = _free_port()
    process = subprocess.Popen(
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    import redis

    client = redis.Redis(port=port)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_until(answers, 30, "redis-server to start", every=0.2)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


def _follow(client, job, until: tuple[str, ...], timeout: float = 900.0):
    """Retrieve ``job`` every second until its status is one of ``until``; the statuses seen on the way."""
    followed = [job]

    def ended() -> bool:
        if followed[-1].status not in until:
            followed.append(client.fine_tuning.jobs.retrieve(job.id))
        return followed[-1].status in until

    wait_until(ended, timeout, lambda: f"job {job.id} to end as {until}; still {followed[-1].status}", every=1)
    return followed[-1], [j.status for j in followed]


def _events(client, job_id: str) -> list:
    return client.fine_tuning.jobs.list_events(job_id, limit=1000).data


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_jobs_from_the_api_are_trained_or_cancelled_by_a_separate_worker_and_served_by_a_replica(
    tmp_path, cache_dir, redis_url
):
    """Three jobs through one queue: one cancelled while it trains, one cancelled while it waits, and
    one followed to ``succeeded`` and chatted with."""
    import openai
    from openai import OpenAI

    from store.adapters import list_versions, read_live
    from store.jobs import JobStore

    personas = tmp_path / "personas"
    personas.mkdir()
    replica = LiveServer(personas, cache_dir, ARTIFACTS / "replica.log")
    replica.env.update({"PERSONA_QUEUE_URL": redis_url, "PERSONA_TRAIN": "false", "PERSONA_UI": "false"})
    worker_log = open(ARTIFACTS / "worker.log", "w")  # noqa: SIM115 (the worker writes to it until the end)
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker"],
        cwd=REPO,
        env=dict(replica.env),
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    replica.start()
    try:
        client = OpenAI(base_url=replica.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        lines = [json.loads(line) for line in (REPO / "personas" / "wren" / "logs" / "website_chat.jsonl").open()]
        upload = tmp_path / "nova.jsonl"
        upload.write_text("".join(json.dumps(line) + "\n" for line in lines[3:]))
        held_out = tmp_path / "nova-validation.jsonl"
        held_out.write_text("".join(json.dumps(line) + "\n" for line in lines[:3]))
        broken = tmp_path / "broken.jsonl"
        broken.write_text(json.dumps(lines[0]) + "\n" + '{"messages": [{"role": "assistant"}]}\n')
        with pytest.raises(openai.BadRequestError, match=r"line 2: field 'messages\[0\]\.content'"):
            client.files.create(file=broken.open("rb"), purpose="fine-tune")
        file = client.files.create(file=upload.open("rb"), purpose="fine-tune")
        validation = client.files.create(file=held_out.open("rb"), purpose="fine-tune")
        base = "SmolLM2-135M-Instruct"

        # A long run of nova, cancelled once it trains: its process stops and nothing is published.
        long_run = client.fine_tuning.jobs.create(
            model=base, training_file=file.id, suffix="nova", hyperparameters={"n_epochs": 20}, seed=3
        )
        # A job of another persona waiting behind it, cancelled before it starts: it never runs.
        waiting = client.fine_tuning.jobs.create(model=base, training_file=file.id, suffix="ghost")
        assert client.fine_tuning.jobs.cancel(waiting.id).status == "cancelled"
        wait_until(
            lambda: any(e.type == "metrics" for e in _events(client, long_run.id)), 600, "training step of the long run"
        )
        assert client.fine_tuning.jobs.retrieve(long_run.id).status == "running"
        pid = JobStore(personas).get(long_run.id).pid
        cancelled = client.fine_tuning.jobs.cancel(long_run.id)
        assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
        wait_until(lambda: _process_gone(pid), 30, "stop of the cancelled training process")
        wait_until(
            lambda: any("stopped after the cancel" in e.message for e in _events(client, long_run.id)),
            30,
            "worker's record of the stop",
        )
        assert list_versions(personas / "nova") == [] and read_live(personas / "nova") is None

        # The next job still runs: created, followed to succeeded, served by its fine_tuned_model.
        job = client.fine_tuning.jobs.create(
            model=base,
            training_file=file.id,
            validation_file=validation.id,
            suffix="nova",
            hyperparameters={"n_epochs": 1},
            seed=3,
        )
        assert job.status in ("validating_files", "queued")
        job, statuses = _follow(client, job, ("succeeded", "failed", "cancelled"))
        assert job.status == "succeeded", job.error
        assert "running" in statuses and job.trained_tokens and job.fine_tuned_model.startswith("ft:")
        messages = [e.message for e in _events(client, job.id)]
        assert any(m.startswith("Step ") for m in messages) and any(m.startswith("Held-out loss") for m in messages)
        listed = [j for j in client.fine_tuning.jobs.list().data if j.id == job.id][0]
        assert listed.fine_tuned_model == job.fine_tuned_model
        reply = client.chat.completions.create(
            model=job.fine_tuned_model, max_tokens=12, messages=[{"role": "user", "content": "Hello!"}]
        )
        # v1: the cancelled run published no version before it.
        assert reply.system_fingerprint == "v1" and reply.choices[0].message.content
        assert list_versions(personas / "nova") == [1]

        store = JobStore(personas)
        assert [j.status for j in store.all() if j.persona == "ghost"] == ["cancelled"]
        assert store.get(waiting.id).started_at is None and list_versions(personas / "ghost") == []
        assert client.fine_tuning.jobs.retrieve(long_run.id).status == "cancelled"
        assert worker.poll() is None
    finally:
        replica.stop()
        worker.terminate()
        worker.wait(timeout=30)
