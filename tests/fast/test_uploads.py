"""Creating a persona from uploaded chat exports over HTTP: the report, the refusals, the files on disk."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServeSettings
from service.uploads import STAGED_FOR_S, UPLOADS_DIR
from store.jobs import JobStore
from tests.support.polling import wait_until_async
from tests.support.watching import seen, start_watching

from .fake_engine import SERVE_ONLY, FakeEngine
from .test_api import assert_openai_error

REPO = Path(__file__).resolve().parents[2]
WREN_LOGS = sorted((REPO / "personas" / "wren" / "logs").iterdir())
BROKEN = REPO / "tests" / "fixtures" / "logs" / "broken"


@pytest.fixture()
def client(tmp_path: Path, cache_dir: Path, base_model):
    root = tmp_path / "personas"
    (root / "wren" / "logs").mkdir(parents=True)
    (root / "wren" / "logs" / "chat.txt").write_text("Tom: hi\nWren: oh crumbs, hello petal\n")
    settings = ServeSettings(
        personas_dir=root,
        cache_dir=cache_dir,
        base_model=str(base_model.path),
        ui=False,
        max_upload_mb=1,
        **SERVE_ONLY,
    )
    with TestClient(create_app(settings, engine_factory=lambda s, b: FakeEngine())) as c:
        c.root = root
        yield c


def upload(client: TestClient, files: list[tuple[str, bytes]], name: str | None = None):
    data = {"name": name} if name else None
    return client.post("/v1/personas/uploads", files=[("files", (n, content)) for n, content in files], data=data)


def transcript(character: str, other: str, turns: int) -> bytes:
    lines = []
    for n in range(turns):
        lines.append(f"{other}: question number {n} about the weather?")
        lines.append(f"{character}: answer {n} for {other}, clear skies ahead.")
    return ("\n".join(lines) + "\n").encode()


def staged(client: TestClient) -> list[str]:
    folder = client.root / UPLOADS_DIR
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_persona_is_created_from_an_upload_with_its_files_byte_for_byte(client: TestClient) -> None:
    files = [(path.name, path.read_bytes()) for path in WREN_LOGS]
    response = upload(client, files)
    assert response.status_code == 201, response.text
    body = response.json()
    report = body["report"]
    formats = {f["file"]: f["format"] for f in report["files"]}
    assert formats["WhatsApp Chat with Wren.txt"].startswith("WhatsApp")
    assert formats["website_chat.jsonl"].startswith("OpenAI")
    speakers = [s["name"] for s in report["speakers"]]
    assert {"Wren", "Auntie Wren"} <= set(speakers)
    assert report["character"] == [] and report["error"]["code"] == "no_character_speaker"
    assert (client.root / UPLOADS_DIR / body["id"] / "logs").is_dir() and not (client.root / "baker").exists()

    no_character = client.post("/v1/personas", json={"name": "baker", "upload": body["id"]})
    error = assert_openai_error(no_character, 400, param="character", code="no_character_speaker")
    assert "Auntie Wren" in error["message"] and not (client.root / "baker").exists()
    unknown = client.post("/v1/personas", json={"name": "baker", "upload": body["id"], "character": "Wrenn"})
    assert "Wrenn" in assert_openai_error(unknown, 400, param="character", code="unknown_speaker")["message"]

    created = client.post(
        "/v1/personas", json={"name": "baker", "upload": body["id"], "character": ["Wren", "Auntie Wren"]}
    )
    assert created.status_code == 201, created.text
    status = created.json()
    assert status["name"] == "baker" and status["status"] == "queued" and status["queue_position"] == 1
    logs = client.root / "baker" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [n for n, _ in files]
    for name, content in files:
        assert (logs / name).read_bytes() == content
    card = yaml.safe_load((client.root / "baker" / "persona.yaml").read_text())
    assert card == {"speakers": ["Wren", "Auntie Wren"]}
    assert [(j.persona, j.source) for j in JobStore(client.root).all()] == [("baker", "api")]
    assert "baker" in [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert staged(client) == [], "the staged upload is used up"
    again = client.post("/v1/personas", json={"name": "other", "upload": body["id"], "character": "Wren"})
    assert_openai_error(again, 404, param="upload", code="upload_not_found")


def test_the_character_is_guessed_when_one_speaker_is_in_every_file(client: TestClient) -> None:
    files = [("sam.txt", transcript("Nova", "Sam", 14)), ("kit.txt", transcript("Nova", "Kit", 14))]
    body = upload(client, files).json()
    assert body["report"]["character"] == ["Nova"] and body["report"]["character_from"] == "guess"
    assert body["report"]["character_turns"] == 28 and body["report"]["error"] is None
    created = client.post("/v1/personas", json={"name": "star", "upload": body["id"], "train": False})
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "card"
    assert yaml.safe_load((client.root / "star" / "persona.yaml").read_text()) == {"speakers": ["Nova"]}
    assert JobStore(client.root).all() == []


def test_an_empty_or_unsupported_file_is_refused_by_name_and_nothing_is_kept(client: TestClient) -> None:
    good = ("sam.txt", transcript("Nova", "Sam", 3))
    empty = upload(client, [good, ("empty.txt", b"")])
    assert "empty.txt" in assert_openai_error(empty, 400, param="files", code="empty_file")["message"]
    readme = (BROKEN / "readme.md").read_bytes()
    unsupported = upload(client, [good, ("readme.md", readme)])
    error = assert_openai_error(unsupported, 400, param="files", code="unsupported_file")
    assert "readme.md" in error["message"] and "sam.txt" not in error["message"]
    too_big = upload(client, [("big.txt", b"A: b\n" * 300_000)])
    assert "1 MiB" in assert_openai_error(too_big, 400, param="files", code="file_too_large")["message"]
    twice = upload(client, [good, good])
    assert_openai_error(twice, 400, param="files", code="duplicate_file")
    hidden = upload(client, [(".chat.txt", b"A: b\n")])
    assert ".chat.txt" in assert_openai_error(hidden, 400, param="files", code="invalid_file_name")["message"]
    assert staged(client) == []
    assert_openai_error(client.post("/v1/personas/uploads"), 400, param="files")


def test_a_file_name_is_reduced_to_its_base_name(client: TestClient) -> None:
    body = upload(client, [("../../../escape.txt", transcript("Nova", "Sam", 3))]).json()
    assert [f["name"] for f in body["files"]] == ["escape.txt"]
    assert (client.root / UPLOADS_DIR / body["id"] / "logs" / "escape.txt").is_file()
    assert not (client.root.parent / "escape.txt").exists() and not (client.root.parent.parent / "escape.txt").exists()


def test_bad_names_unknown_uploads_and_existing_personas_are_refused(client: TestClient) -> None:
    files = [("sam.txt", transcript("Nova", "Sam", 3))]
    body = upload(client, files).json()
    for bad in ("Bad Name", "../wren", "", "-x"):
        response = client.post("/v1/personas", json={"name": bad, "upload": body["id"], "character": "Nova"})
        assert_openai_error(response, 400, param="name", code="invalid_name")
    exists = client.post("/v1/personas", json={"name": "wren", "upload": body["id"], "character": "Nova"})
    assert "/v1/personas/wren/logs" in assert_openai_error(exists, 409, param="name", code="persona_exists")["message"]
    assert [p.name for p in (client.root / "wren" / "logs").iterdir()] == ["chat.txt"]
    for unknown in ("upload-0000", "nope", "../.jobs"):
        response = client.post("/v1/personas", json={"name": "fresh", "upload": unknown, "character": "Nova"})
        assert_openai_error(response, 404, param="upload", code="upload_not_found")
    missing = client.post("/v1/personas", json={"name": "fresh"})
    assert_openai_error(missing, 400, param="upload")
    assert not (client.root / "fresh").exists() and not (client.root / "Bad Name").exists()


def test_logs_are_added_to_a_persona_without_replacing_one(client: TestClient) -> None:
    chat = (client.root / "wren" / "logs" / "chat.txt").read_bytes()
    new = transcript("Wren", "Tom", 3)
    body = upload(client, [("chat.txt", chat), ("more.txt", new)], name="wren").json()
    added = client.post("/v1/personas/wren/logs", json={"upload": body["id"]})
    assert added.status_code == 200, added.text
    logs = client.root / "wren" / "logs"
    assert (logs / "chat.txt").read_bytes() == chat and (logs / "more.txt").read_bytes() == new
    assert added.json()["status"] == "queued"

    clash = upload(client, [("more.txt", transcript("Wren", "Tom", 4)), ("extra.txt", new)], name="wren").json()
    refused = client.post("/v1/personas/wren/logs", json={"upload": clash["id"]})
    assert "more.txt" in assert_openai_error(refused, 409, param="upload", code="file_exists")["message"]
    assert (logs / "more.txt").read_bytes() == new and not (logs / "extra.txt").exists()
    nobody = client.post("/v1/personas/nobody/logs", json={"upload": clash["id"]})
    assert_openai_error(nobody, 404, param="name")


def test_staged_uploads_older_than_an_hour_are_removed(client: TestClient) -> None:
    old = upload(client, [("sam.txt", transcript("Nova", "Sam", 3))]).json()
    long_ago = time.time() - STAGED_FOR_S - 60
    for path in (client.root / UPLOADS_DIR).iterdir():
        os.utime(path, (long_ago, long_ago))
    fresh = upload(client, [("kit.txt", transcript("Nova", "Kit", 3))]).json()
    assert staged(client) == sorted([fresh["id"], fresh["id"] + ".json"])
    gone = client.post("/v1/personas", json={"name": "late", "upload": old["id"], "character": "Nova"})
    assert_openai_error(gone, 404, param="upload")


async def test_the_watcher_leaves_staged_uploads_alone(tmp_path: Path) -> None:
    import asyncio

    from service.watcher import PersonaWatcher

    calls: list[str] = []

    async def settled(name: str) -> None:
        calls.append(name)

    staged_logs = tmp_path / UPLOADS_DIR / "upload-1" / "logs"
    staged_logs.mkdir(parents=True)  # watched from the start, so its files are reported in order
    watcher = PersonaWatcher(tmp_path, settled, settle_s=0.3)
    task = await start_watching(watcher, tmp_path / UPLOADS_DIR / ".probe")
    since = watcher.batches
    (staged_logs / "chat.txt").write_text("Sam: hi\nNova: hello\n")
    await seen(watcher, since, "the staged upload")
    assert watcher.changes == 0, "a staged upload shows nothing new"
    (tmp_path / "nova" / "logs").mkdir(parents=True)  # written last: reported after anything written before it
    await wait_until_async(lambda: calls, 15, "the new persona folder to be reported")
    assert calls == ["nova"] and watcher.changes >= 1, "a staged upload is no persona"
    watcher.stop()
    await asyncio.wait_for(task, timeout=10)
