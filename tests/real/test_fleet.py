"""The fleet with one real replica: ``persona serve --ray`` as a user starts it, vLLM on the bundled
model inside a Ray Serve replica, driven with the official ``openai`` client through the ingress."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from bench.random_adapter import publish_random_adapter
from tests.conftest import ARTIFACTS, REPO, _free_port, logs_already_seen
from tests.support.polling import wait_until

pytestmark = pytest.mark.real

PERSONA = "fleet-lora"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture()
def fleet_url(tmp_path: Path, cache_dir: Path, base_model):
    personas = tmp_path / "personas"
    folder = personas / PERSONA
    (folder / "logs").mkdir(parents=True)
    (folder / "persona.yaml").write_text("display_name: Fleet\nsystem_prompt: You are a helpful assistant.\n")
    logs_already_seen(folder)
    publish_random_adapter(folder, base_model, seed=7)
    port = _free_port()
    env = {
        **os.environ,
        "PERSONA_PERSONAS_DIR": str(personas),
        "PERSONA_CACHE_DIR": str(cache_dir),
        "PERSONA_MAX_MODEL_LEN": "1024",
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "cli.main", "serve", "--ray", "--replicas", "1", "--no-train"]
    command += ["--port", str(port), "--replica-cpus", "1"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / f"fleet-{os.getpid()}.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(
                lambda: process.poll() is not None or _healthy(url), 900, f"a healthy fleet (see {log_path})", every=2
            )
            assert process.poll() is None, f"the fleet exited with {process.returncode}; see {log_path}"
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def test_one_real_replica_answers_and_streams(fleet_url: str) -> None:
    from openai import OpenAI

    with OpenAI(base_url=fleet_url + "/v1", api_key="unused", max_retries=0, timeout=300) as client:
        assert PERSONA in [m.id for m in client.models.list().data]
        question = [{"role": "user", "content": "Tell me about your favourite place."}]
        raw = client.chat.completions.with_raw_response.create(
            model=PERSONA, messages=question, max_tokens=16, temperature=0
        )
        assert raw.headers["x-replica"].startswith("SERVE_REPLICA::")
        whole = raw.parse().choices[0].message.content
        assert whole.strip()
        stream = client.chat.completions.create(
            model=PERSONA, messages=question, max_tokens=16, temperature=0, stream=True
        )
        pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
        assert len([p for p in pieces if p]) > 1, "the reply comes in pieces"
        assert "".join(pieces) == whole, "greedy decoding gives the same reply streamed or whole"
