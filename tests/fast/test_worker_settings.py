"""What a training process receives: the server's worker and the worker's job processes read one model,
written into their environment by one function."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from service.background import BackgroundTraining
from service.settings import ServeSettings
from store.jobs import JobStore
from store.registry import PersonaStore
from store.serving_load import ServingLoad, busy_file, server_busy
from store.settings import WorkerSettings, machine_threads
from training import worker as worker_module
from training.job import JobSettings
from training.worker import Worker


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``PERSONA_*`` variable of this process leaks into what is read back."""
    for name in WorkerSettings.model_fields:
        monkeypatch.delenv(f"PERSONA_{name.upper()}", raising=False)
    return monkeypatch


def _read_back(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> WorkerSettings:
    for key, value in env.items():
        if key.startswith("PERSONA_"):
            monkeypatch.setenv(key, value)
    return WorkerSettings()


def test_the_servers_worker_env_reads_back_as_the_settings_it_was_built_from(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    serve = ServeSettings(
        personas_dir=tmp_path / "personas",
        cache_dir=tmp_path / "cache",
        host="0.0.0.0",
        port=8123,
        api_keys=["sk-one", "sk-two"],
        allow_download=True,
        max_lora_rank=32,
    )
    background = BackgroundTraining(serve, PersonaStore(serve.personas_dir))
    env = background._worker_env()
    assert env == serve.worker_settings().child_env()
    received = _read_back(env, clean_env)
    assert received == serve.worker_settings()
    assert received.personas_dir == (tmp_path / "personas").resolve() and received.allow_download is True
    assert received.max_lora_rank == 32 and received.queue_url == serve.queue_url
    assert received.eval_url == "http://127.0.0.1:8123/v1" and received.eval_api_key == "sk-one"


def test_the_servers_worker_yields_to_that_server_while_it_generates(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, base_model
) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app

    from .fake_engine import FakeEngine

    serve = ServeSettings(personas_dir=tmp_path / "personas", cache_dir=tmp_path / "cache", train_yield_share=0.25)
    load = ServingLoad(busy_file(serve.cache_dir))
    received = _read_back(BackgroundTraining(serve, PersonaStore(serve.personas_dir), load)._worker_env(), clean_env)
    assert received.yield_to == load.path.resolve() and received.yield_share == 0.25

    seen: list[bool] = []

    class Watched(FakeEngine):
        async def generate(self, *args):
            async for chunk in super().generate(*args):
                seen.append(server_busy(load.path))
                yield chunk

    settings = serve.model_copy(update={"base_model": str(base_model.path), "ui": False, "auto_train": False})
    app = create_app(settings, engine_factory=lambda s, b: Watched())
    clean_env.setattr(BackgroundTraining, "_supervise_worker", lambda self: asyncio.sleep(0))
    with TestClient(app) as client:
        chat = app.state.chat
        assert chat.load is not None and chat.load.path == load.path
        body = {"model": base_model.id, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as reply:
            assert reply.status_code == 200 and "".join(reply.iter_text())
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        assert seen and all(seen)  # every token was generated with the worker told to yield
        assert not server_busy(load.path)  # and nothing is generating now


def test_train_threads_mean_the_same_in_the_server_the_worker_and_the_job(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    store = {"personas_dir": tmp_path, "cache_dir": tmp_path / "cache"}
    # 0, every core, is the default whoever reads it: the server pauses training while it generates.
    every = ServeSettings(**store).worker_settings()
    assert every.train_threads == 0 and every.threads() == machine_threads()
    assert WorkerSettings(**store).threads() == machine_threads() == JobSettings(**store).threads()
    share = ServeSettings(**store, train_threads=3).worker_settings()
    assert share.threads() == 3
    assert _read_back(share.to_env(), clean_env).threads() == 3
    assert _read_back(every.to_env(), clean_env).threads() == machine_threads()


def test_unset_values_are_not_inherited_from_the_parents_environment(tmp_path: Path) -> None:
    settings = WorkerSettings(personas_dir=tmp_path, cache_dir=tmp_path)
    env = settings.child_env({"PERSONA_EVAL_URL": "http://stale/v1", "PERSONA_PORT": "9", "HOME": "/h"})
    assert "PERSONA_EVAL_URL" not in env and env["HOME"] == "/h" and env["PERSONA_PORT"] == "9"
    assert env["PERSONA_PERSONAS_DIR"] == str(tmp_path.resolve())


def test_a_job_process_reads_the_workers_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker hands its settings to each training process; the process reads back the same values."""
    personas, seen = tmp_path / "personas", tmp_path / "seen.json"
    personas.mkdir()
    script = tmp_path / "job.py"
    script.write_text(
        "import os, sys\n"
        "from store.jobs import JobStore\n"
        "from training.job import JobSettings\n"
        f"open({str(seen)!r}, 'w').write(JobSettings().model_dump_json())\n"
        "JobStore(os.environ['PERSONA_PERSONAS_DIR']).update(sys.argv[1], status='succeeded')\n"
    )
    monkeypatch.setattr(worker_module, "_job_command", lambda job_id: [sys.executable, str(script), job_id])
    settings = WorkerSettings(
        personas_dir=personas,
        cache_dir=tmp_path / "cache",
        train_threads=5,
        train_nice=0,
        eval_url="http://127.0.0.1:9/v1",
        eval_api_key="sk-x",
        retries=0,
    )
    worker = Worker(settings)
    job = JobStore(personas).create("wren", "cli")
    worker.run_job(job.id)
    assert JobStore(personas).get(job.id).status == "succeeded"
    assert WorkerSettings.model_validate(json.loads(seen.read_text())) == settings.model_copy(
        update={"personas_dir": personas.resolve(), "cache_dir": (tmp_path / "cache").resolve()}
    )


def test_the_evaluation_server_gets_the_trainers_store_and_never_trains(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    from training.fidelity.server import serve_env

    for name in ServeSettings.model_fields:
        clean_env.delenv(f"PERSONA_{name.upper()}", raising=False)
    job = JobSettings(
        personas_dir=tmp_path / "personas", cache_dir=tmp_path / "cache", base_model="/models/base", max_lora_rank=8
    )
    clean_env.setenv("PERSONA_PORT", "1")  # what this process had is replaced, not inherited
    env = serve_env(job, 8765)
    for key, value in env.items():
        if key.startswith("PERSONA_"):
            clean_env.setenv(key, value)
    served = ServeSettings()
    assert served.personas_dir == job.personas_dir.resolve() and served.cache_dir == job.cache_dir.resolve()
    assert served.base_model == "/models/base" and served.max_lora_rank == 8
    assert served.port == 8765 and served.host == "127.0.0.1"
    assert not served.train and not served.auto_train and not served.ui
