"""The Ray fleet on one machine: an ingress and two engine replicas over the fake engine.

Routing by persona version (Ray Serve's model multiplexing), affinity, and a replica that dies
mid-stream: the client gets an OpenAI-shaped error event and the next request is served elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path

import httpx
import pytest

from service.engine import AdapterRef, GenerationParams
from service.settings import ServeSettings
from tests.conftest import REPO

from .fake_engine import FakeEngine
from .fake_store import write_version

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")


class SlowEngine(FakeEngine):
    """The fake engine, pausing between words for the persona ``slow`` so a stream can be cut."""

    async def generate(
        self, prompt_ids: list[int], params: GenerationParams, request_id: str, adapter: AdapterRef | None
    ):
        async for chunk in super().generate(prompt_ids, params, request_id, adapter):
            if adapter is not None and adapter.name.startswith("slow@"):
                await asyncio.sleep(0.3)
            yield chunk


def slow_engine(settings: ServeSettings, base) -> SlowEngine:
    return SlowEngine()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PERSONAS = ("alpha", "beta", "gamma", "delta", "slow")


@pytest.fixture(scope="module")
def fleet_url(tmp_path_factory, base_model):
    from service.fleet import FleetSettings
    from service.fleet.app import start_fleet

    root = tmp_path_factory.mktemp("fleet") / "personas"
    for name in PERSONAS:
        (root / name / "logs").mkdir(parents=True)
        (root / name / "persona.yaml").write_text(f"display_name: {name}\n")
        write_version(root / name, 1, base_model.hash)
    port = _free_port()
    settings = ServeSettings(
        personas_dir=root,
        cache_dir=tmp_path_factory.mktemp("cache"),
        base_model=str(base_model.path),
        host="127.0.0.1",
        port=port,
    )
    fleet = FleetSettings(replicas=2, replica_cpus=0.2, ingress_cpus=0.1, retries=1)
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    try:
        start_fleet(settings, fleet, slow_engine)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def chat(url: str, model: str, **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}], **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60)


def settled(url: str, model: str) -> str:
    """The replica a persona's first request lands on, once Ray's routers know it holds the persona."""
    response = chat(url, model)
    assert response.status_code == 200, response.text
    time.sleep(1.0)
    return response.headers["x-replica"]


def test_routes_by_model_and_lists_models(fleet_url: str) -> None:
    body = chat(fleet_url, "alpha").json()
    assert body["choices"][0]["message"]["content"].startswith("[alpha@v1#")
    assert body["model"] == "alpha"
    ids = [m["id"] for m in httpx.get(fleet_url + "/v1/models", timeout=30).json()["data"]]
    assert {"alpha", "alpha@v1", "slow"} <= set(ids)
    missing = chat(fleet_url, "nobody")
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}


def test_a_persona_stays_on_its_replica(fleet_url: str) -> None:
    first = settled(fleet_url, "beta")
    for model in ("beta", "beta@v1", "beta", "beta"):
        assert chat(fleet_url, model).headers["x-replica"] == first, "a persona and its live version share a replica"


def test_personas_spread_over_the_replicas(fleet_url: str) -> None:
    homes = {name: settled(fleet_url, name) for name in ("alpha", "beta", "gamma", "delta")}
    assert len(set(homes.values())) == 2, f"a new persona goes to the replica holding fewer: {homes}"


def test_streaming_through_the_ingress(fleet_url: str) -> None:
    body = {"model": "alpha", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with httpx.stream("POST", fleet_url + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text.startswith("[alpha@v1#") and text.endswith("ten")


def test_a_replica_dying_mid_stream(fleet_url: str) -> None:
    home = settled(fleet_url, "slow")
    body = {"model": "slow", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    events = []
    with httpx.stream("POST", fleet_url + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.headers["x-replica"] == home
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(json.loads(line[6:]) if line != "data: [DONE]" else "[DONE]")
            if len(events) == 2:
                ray.kill(ray.get_actor(home, namespace="serve"), no_restart=True)
    assert "[DONE]" not in events
    error = events[-1]["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error"
    after = chat(fleet_url, "slow", max_tokens=2)
    assert after.status_code == 200, after.text
    assert after.headers["x-replica"] != home
    assert after.json()["choices"][0]["message"]["content"].startswith("[slow@v1#")


def test_replicas_only_serve_and_the_serve_run_target_takes_settings(tmp_path: Path) -> None:
    from service.fleet.app import fleet, replica_settings

    served = replica_settings(ServeSettings(personas_dir=Path("personas"), train=True, auto_train=True))
    assert (served.train, served.auto_train, served.ui) == (False, False, False)
    assert served.personas_dir.is_absolute()
    assert fleet({"replicas": "2", "personas_dir": str(tmp_path), "max_loras": "4"}) is not None
    with pytest.raises(ValueError, match="replica_count"):
        fleet({"replica_count": "2"})


def test_routing_key_is_the_live_version(tmp_path: Path, base_model) -> None:
    from service.fleet.ingress import routing_key

    (tmp_path / "alpha").mkdir()
    write_version(tmp_path / "alpha", 3, base_model.hash)
    assert routing_key(tmp_path, "alpha") == "alpha@v3"
    for model in ("alpha@v1", "card-only", "SmolLM2-135M-Instruct", "../etc", "ft:x:y"):
        assert routing_key(tmp_path, model) == model
