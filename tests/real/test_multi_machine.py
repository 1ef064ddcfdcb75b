"""Beyond one machine: a serving replica with ``--no-train`` and a separate ``persona worker`` share one
persona store and one queue in Debian's redis-server; a job created through OpenAI's fine-tuning API
is trained by the worker and served by the replica."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS, REPO, LiveServer, _free_port

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
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.2)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


def test_a_job_from_the_api_is_trained_by_a_separate_worker_and_served_by_a_replica(tmp_path, cache_dir, redis_url):
    import openai
    from openai import OpenAI

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
        upload.write_text("".join(json.dumps(line) + "\n" for line in lines))
        broken = tmp_path / "broken.jsonl"
        broken.write_text(json.dumps(lines[0]) + "\n" + '{"messages": [{"role": "assistant"}]}\n')
        with pytest.raises(openai.BadRequestError, match=r"line 2: field 'messages\[0\]\.content'"):
            client.files.create(file=broken.open("rb"), purpose="fine-tune")
        file = client.files.create(file=upload.open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model="SmolLM2-135M-Instruct", training_file=file.id, suffix="nova", hyperparameters={"n_epochs": 1}, seed=3
        )
        assert job.status in ("validating_files", "queued")
        statuses = []
        deadline = time.monotonic() + 900
        while job.status not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"job still {job.status}"
            time.sleep(1)
            job = client.fine_tuning.jobs.retrieve(job.id)
            statuses.append(job.status)
        assert job.status == "succeeded", job.error
        assert "running" in statuses and job.trained_tokens and job.fine_tuned_model.startswith("ft:")
        running_on = [j for j in client.fine_tuning.jobs.list().data if j.id == job.id][0]
        assert running_on.fine_tuned_model == job.fine_tuned_model
        reply = client.chat.completions.create(
            model=job.fine_tuned_model, max_tokens=12, messages=[{"role": "user", "content": "Hello!"}]
        )
        assert reply.system_fingerprint == "v1" and reply.choices[0].message.content
        assert worker.poll() is None
    finally:
        replica.stop()
        worker.terminate()
        worker.wait(timeout=30)
