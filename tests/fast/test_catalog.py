"""Listing many personas: the catalog reads only folders that changed, and a listing never stalls a
stream in flight (a real HTTP server on a loopback port, the fake engine streaming slowly)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from service.app import create_app
from service.engine import AdapterRef, Chunk, GenerationParams
from service.personas.status import StatusCache, all_statuses
from service.settings import ServeSettings
from store.catalog import Catalog, signature
from store.jobs import JobError, JobStore
from store.progress import TrainingProgress, write_progress
from store.registry import PersonaStore

from .fake_engine import SERVE_ONLY, FakeEngine
from .fake_store import write_report, write_version

COUNT = 1000
SCAN_S = 3.0
"""How long one listing's folder checks are made to take, so that a listing run on the event loop would
stall the stream for this long: far above the pauses a loaded machine gives a healthy stream."""


class TickingEngine(FakeEngine):
    """Streams one word every ``interval_s`` until told to finish, so a stream outlasts the listings."""

    def __init__(self, interval_s: float = 0.02, limit_s: float = 60.0) -> None:
        super().__init__(max_model_len=512)
        self.interval_s = interval_s
        self.limit_s = limit_s
        self.finish = threading.Event()

    async def generate(
        self, prompt_ids: list[int], params: GenerationParams, request_id: str, adapter: AdapterRef | None
    ):
        began = time.monotonic()
        while not self.finish.is_set() and time.monotonic() - began < self.limit_s:
            yield Chunk(0, " tick", 1)
            await asyncio.sleep(self.interval_s)
        yield Chunk(0, " done", 1, "stop")


def make_personas(root: Path, count: int) -> list[str]:
    names = [f"p{index:04d}" for index in range(count)]
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "persona.yaml").write_text(f"display_name: Persona {name}\ndescription: One of many.\n")
    return names


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_catalog_reads_again_only_what_changed(tmp_path: Path, base_model) -> None:
    root = tmp_path / "personas"
    make_personas(root, 5)
    catalog = Catalog(PersonaStore(root))
    personas, problems = catalog.scan()
    assert [p.name for p in personas] == [f"p{i:04d}" for i in range(5)] and not problems
    assert catalog.reads == 5
    catalog.scan()
    assert catalog.reads == 5

    write_version(root / "p0001", 1, base_model.hash)
    (root / "p0002" / "persona.yaml").write_text("sampling:\n  temperature: hot\n")
    (root / "p0003").rename(tmp_path / "gone")
    (root / "p0009").mkdir()
    personas, problems = catalog.scan()
    by_name = {p.name: p for p in personas}
    assert set(by_name) == {"p0000", "p0001", "p0004", "p0009"}
    assert by_name["p0001"].live == 1 and by_name["p0001"].versions == [1]
    assert set(problems) == {"p0002"} and "temperature" in problems["p0002"]
    assert catalog.reads == 8

    write_version(root / "p0001", 2, base_model.hash)
    assert {p.name: p for p in catalog.scan()[0]}["p0001"].live == 2


def test_with_a_token_a_listing_checks_no_folder_until_it_moves_or_ages(tmp_path: Path) -> None:
    root = tmp_path / "personas"
    make_personas(root, 3)
    token = [0]
    catalog = Catalog(PersonaStore(root), lambda: token[0], max_age_s=3600)
    assert len(catalog.entries()) == 3 and catalog.checks == 1
    (root / "p0001" / "persona.yaml").write_text("display_name: Edited\n")
    assert catalog.entries()["p0001"].title == "Persona p0001" and catalog.checks == 1, "the token did not move"
    token[0] += 1
    assert catalog.entries()["p0001"].title == "Edited" and catalog.checks == 2

    catalog.max_age_s = 0.0  # a change no token sees (another machine's): checked in the background
    (root / "p0002" / "persona.yaml").write_text("display_name: Elsewhere\n")
    assert catalog.entries()["p0002"].title == "Persona p0002", "the listing does not wait for the check"
    deadline = time.monotonic() + 10
    while catalog.checks < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert catalog.entries()["p0002"].title == "Elsewhere"


def test_statuses_are_built_again_only_for_the_personas_that_changed(tmp_path: Path, base_model) -> None:
    root = tmp_path / "personas"
    make_personas(root, 5)
    store = PersonaStore(root)
    cache = StatusCache(Catalog(store))

    def listing() -> dict:
        statuses, problems = all_statuses(store, cache=cache)
        assert not problems
        return {s.name: s for s in statuses}

    assert set(listing()) == {f"p{i:04d}" for i in range(5)} and cache.builds == 5
    listing()
    assert cache.builds == 5, "nothing changed, nothing built"

    version = write_version(root / "p0001", 1, base_model.hash)
    (root / "p0002" / "persona.yaml").write_text("display_name: Renamed\n")
    jobs = JobStore(root)
    job = jobs.create("p0003", "cli")
    jobs.update(job.id, status="failed", error=JobError(code="training_failed", message="out of memory"))
    now = listing()
    assert cache.builds == 8
    assert now["p0001"].status == "trained" and now["p0001"].live_version == "v1"
    assert now["p0002"].display_name == "Renamed" and now["p0003"].last_failure == "out of memory"

    write_report(version, {name: {"perplexity": 20.0} for name in ("base", "card", "adapter")})
    assert listing()["p0001"].versions[0].fidelity is not None and cache.builds == 9

    write_progress(root / "p0004", TrainingProgress(state="running", step=3, total_steps=9, pid=os.getpid()))
    assert listing()["p0004"].training.step == 3
    assert listing()["p0004"].training.step == 3 and cache.builds == 11, "a running training is read each time"


@pytest.fixture()
def server(tmp_path: Path, base_model):
    root = tmp_path / "personas"
    make_personas(root, COUNT)
    engine = TickingEngine()
    port = _free_port()
    settings = ServeSettings(
        personas_dir=root,
        cache_dir=tmp_path / "cache",
        base_model=str(base_model.path),
        ui=False,
        host="127.0.0.1",
        port=port,
        **SERVE_ONLY,
    )
    app = create_app(settings, engine_factory=lambda s, b: engine)
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started
    url = f"http://127.0.0.1:{port}"
    while httpx.get(url + "/health", timeout=10).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield url, root, engine, app
    finally:
        engine.finish.set()
        uv.should_exit = True
        thread.join(timeout=30)


def _names(url: str) -> tuple[set[str], dict[str, dict]]:
    """The ids ``/v1/models`` lists and the personas ``/v1/personas`` lists, by name."""
    ids = {m["id"] for m in httpx.get(url + "/v1/models", timeout=120).json()["data"]}
    return ids, {p["name"]: p for p in httpx.get(url + "/v1/personas", timeout=120).json()["data"]}


def _until(check, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while not (found := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def test_statuses_are_built_at_start_up_so_the_first_listing_builds_none(server) -> None:
    url, _, _, app = server
    cache = app.state.statuses
    assert _until(lambda: cache.builds >= COUNT), "the statuses were not built at start-up"
    built = cache.builds
    ids, personas = _names(url)
    assert len(personas) == COUNT and {"p0000", "p0999"} <= ids
    assert cache.builds == built, "the first listing built every status again"


def test_listings_keep_a_stream_flowing_and_stay_current(server, monkeypatch) -> None:
    url, root, engine, app = server

    def slow_signature(folder: Path):
        time.sleep(SCAN_S / COUNT)
        return signature(folder)

    monkeypatch.setattr("store.catalog.signature", slow_signature)
    arrivals: list[float] = []
    streamed = threading.Event()

    def stream() -> None:
        body = {"model": "p0000", "messages": [{"role": "user", "content": "Hi"}], "stream": True, "max_tokens": 400}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    json.loads(line[6:])
                    arrivals.append(time.monotonic())
                    streamed.set()
        streamed.set()

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    assert streamed.wait(30) and arrivals

    expected = {f"p{i:04d}" for i in range(COUNT)}
    began = time.monotonic()
    ids, personas = _names(url)
    assert expected <= ids and expected <= set(personas)
    (root / "late").mkdir()
    (root / "late" / "persona.yaml").write_text("display_name: Late\n")
    ids, personas = _names(url)
    assert "late" in ids and "late" in personas, "a persona added is listed at once"
    (root / "p0001" / "persona.yaml").write_text("display_name: Edited\n")
    assert _until(lambda: _names(url)[1]["p0001"]["display_name"] == "Edited"), "an edited card is seen"
    ended = time.monotonic()
    engine.finish.set()
    reader.join(timeout=60)

    during = [t for t in arrivals if began <= t <= ended]
    window = [began, *during, ended]
    gaps = [later - earlier for earlier, later in zip(window, window[1:], strict=False)]
    assert len(during) >= 5, "the stream received nothing while the models were listed"
    assert app.state.catalog.checks >= 3 and ended - began >= 3 * SCAN_S * 0.9, "the changes had folders checked"
    assert max(gaps) < SCAN_S / 2, f"the stream stalled for {max(gaps):.2f} s"


def test_a_listing_with_nothing_changed_checks_no_folder_and_an_api_change_is_listed_at_once(server, base_model):
    url, root, _, app = server
    write_version(root / "p0001", 1, base_model.hash)
    assert _until(lambda: _names(url)[1]["p0001"]["live_version"] == "v1"), "a published version is seen"
    catalog = app.state.catalog

    def settled() -> bool:
        """No folder checked by listings a second apart: the watcher has reported the version."""
        before = catalog.checks
        _names(url)
        time.sleep(1.0)
        _names(url)
        return catalog.checks == before

    assert _until(settled), "the listings kept checking every folder"
    checks = catalog.checks
    for _ in range(3):
        ids, personas = _names(url)
        assert len(personas) == COUNT and "p0001@v1" in ids
    assert catalog.checks == checks, "nothing changed, yet folders were checked"

    response = httpx.put(url + "/v1/personas/p0001/pin", json={"pinned": True}, timeout=30)
    assert response.status_code == 200, response.text
    assert _names(url)[1]["p0001"]["pinned"] is True


def test_while_serving_the_garbage_collector_does_not_walk_what_start_up_made(tmp_path: Path, base_model) -> None:
    """A full collection walks every object it tracks, and a real server's start-up leaves a great many
    (torch, the engine's client, the page): while it walks them, no request or stream is served."""
    root = tmp_path / "personas"
    make_personas(root, 50)
    settings = ServeSettings(
        personas_dir=root, cache_dir=tmp_path / "cache", base_model=str(base_model.path), ui=False, **SERVE_ONLY
    )
    with TestClient(create_app(settings, engine_factory=lambda s, b: FakeEngine())) as client:
        for _ in range(20):
            assert len(client.get("/v1/models").json()["data"]) > 50
        assert gc.get_freeze_count() > 2 * len(gc.get_objects())
    assert gc.get_freeze_count() == 0, "a stopped server left objects hidden from the collector"
