"""The living service on the shared server: a dropped folder is trained and served with no command,
a version swap under a steady stream of requests fails none, and a killed training process leaves
the live version serving and resumes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time

import httpx
import pytest

from store.jobs import JobStore
from tests.conftest import ARTIFACTS, REPO, LiveServer
from tests.real.conftest import publish_random_adapter
from tests.support.polling import wait_until, wait_until_async

pytestmark = pytest.mark.real

QUESTION = [{"role": "user", "content": "What's fresh in the shop this morning?"}]
SMALL_REPORT = (
    "fidelity:\n  heldout_prompts: 4\n  probes: 2\n  sessions: 2\n  perplexity_examples: 8\n  max_tokens: 24\n"
    "  dialogue_turns: 0\n"
)
ANSWERS_PER_PHASE = 8
"""Answers finished in each phase of the swap test (before the swap, after it, after the rollback)."""
FAST_TRAINING = "training:\n  max_steps: 3\n  learning_rate: 0.003\n" + SMALL_REPORT


def status(live_server, name: str) -> dict:
    return httpx.get(f"{live_server.url}/v1/personas/{name}", timeout=30).json()


@pytest.fixture(scope="module")
def living_server(tmp_path_factory, cache_dir):
    """``persona serve`` with its defaults (a worker beside it, the folder watched), as `make run` starts it."""
    server = LiveServer(tmp_path_factory.mktemp("living") / "personas", cache_dir, ARTIFACTS / "living-server.log")
    server.personas_dir.mkdir(parents=True)
    server.env["PERSONA_UI"] = "false"
    server.start()
    yield server
    server.stop()


def test_a_dropped_folder_is_queued_trained_and_served(living_server) -> None:
    from openai import OpenAI

    live_server = living_server
    client = OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    name = "dropped-wren"
    folder = live_server.personas_dir / name
    logs = folder / "logs"
    logs.mkdir(parents=True)
    (folder / "persona.yaml").write_text("speakers: [Wren, Auntie Wren]\n" + FAST_TRAINING)
    for source in sorted((REPO / "personas" / "wren" / "logs").iterdir()):
        data = source.read_bytes()
        with open(logs / source.name, "wb") as handle:  # a slow copy: each file in two pieces
            handle.write(data[: len(data) // 2])
            handle.flush()
            time.sleep(0.3)
            handle.write(data[len(data) // 2 :])
    seen = set()

    def trained():
        now = status(live_server, name)
        seen.add(now["status"])
        return now if now["live_version"] else None

    wait_until(lambda: name in {m.id for m in client.models.list().data}, 30, "the persona to be listed", every=0.5)
    first = wait_until(trained, 900, "the dropped persona's first version", every=0.5)
    assert seen & {"queued", "training"}, seen
    # Live on its held-out perplexity while the job still measures the rest of its report.
    assert first["live_version"] == "v1" and first["status"] == "training", first
    reply = client.chat.completions.create(model=name, messages=QUESTION, temperature=0, max_tokens=16)
    assert reply.system_fingerprint == "v1" and reply.choices[0].message.content

    def reported():
        now = status(live_server, name)
        return now if now["status"] == "trained" else None

    done = wait_until(reported, 600, "the rest of the first version's report", every=0.5)
    [v1] = done["versions"]
    assert done["live_version"] == "v1" and not v1["gate"]["provisional"] and v1["fidelity"] is not None
    jobs = [j for j in JobStore(live_server.personas_dir).for_persona(name)]
    assert [j.status for j in jobs] == ["succeeded"] and jobs[0].source in ("watcher", "startup")


async def _stream_until(async_client, model: str, stop: asyncio.Event, results: list) -> None:
    while not stop.is_set():
        started = time.monotonic()  # a request runs on the version live when it started
        stream = await async_client.chat.completions.create(
            model=model, messages=QUESTION, max_tokens=12, temperature=0.7, stream=True
        )
        fingerprint, finish = None, None
        async for chunk in stream:
            fingerprint = chunk.system_fingerprint or fingerprint
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        results.append((started, fingerprint, finish))


def test_swaps_under_a_steady_stream_fail_no_request(live_server, async_client, base_model) -> None:
    name = "swap-under-load"
    folder = live_server.personas_dir / name
    (folder / "logs").mkdir(parents=True)
    (folder / "persona.yaml").write_text("system_prompt: You are a helpful assistant.\n")
    publish_random_adapter(folder, base_model, seed=11)

    def finished_after(results: list, moment: float) -> bool:
        """Enough requests that started after ``moment`` have finished to judge what they ran on."""
        return sum(1 for at, _, _ in results if at > moment) >= ANSWERS_PER_PHASE

    async def run() -> tuple[list, float, float]:
        stop, results = asyncio.Event(), []
        clients = [asyncio.create_task(_stream_until(async_client, name, stop, results)) for _ in range(8)]
        await wait_until_async(lambda: len(results) >= ANSWERS_PER_PHASE, 300, "a steady stream of answers on v1")
        await asyncio.to_thread(publish_random_adapter, folder, base_model, 12)
        published = time.monotonic()
        await wait_until_async(lambda: finished_after(results, published + 2), 300, "answers started after the swap")
        response = await asyncio.to_thread(
            httpx.post, f"{live_server.url}/v1/personas/{name}/rollback", json={"version": "v1"}, timeout=30
        )
        assert response.status_code == 200, response.text
        rolled_back = time.monotonic()
        await wait_until_async(
            lambda: finished_after(results, rolled_back + 2), 300, "answers started after the rollback"
        )
        stop.set()
        await asyncio.gather(*clients)
        return results, published, rolled_back

    results, published, rolled_back = asyncio.run(run())
    assert len(results) >= 3 * ANSWERS_PER_PHASE and all(finish in ("stop", "length") for _, _, finish in results)
    # Requests started after a swap (with a margin for the store read) run on the new version.
    assert {fp for at, fp, _ in results if published + 2 < at < rolled_back} == {"v2"}
    assert {fp for at, fp, _ in results if at > rolled_back + 2} == {"v1"}


def test_a_killed_training_process_leaves_the_live_version_and_the_next_run_resumes(
    client, live_server, base_model
) -> None:
    name = "killed-wren"
    folder = live_server.personas_dir / name
    shutil.copytree(REPO / "personas" / "wren" / "logs", folder / "logs")
    (folder / "persona.yaml").write_text(
        "speakers: [Wren, Auntie Wren]\ntraining:\n  max_steps: 12\n  checkpoint_every: 2\n" + SMALL_REPORT
    )
    publish_random_adapter(folder, base_model, seed=21)
    response = httpx.post(f"{live_server.url}/v1/personas/{name}/train", timeout=30)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    jobs = JobStore(live_server.personas_dir)
    running = wait_until(
        lambda: (j := jobs.get(job_id)).progress and j.progress.step >= 3 and j,
        600,
        "training to pass its first checkpoint",
        every=0.5,
    )
    os.kill(running.pid, signal.SIGKILL)
    failed = wait_until(lambda: (j := jobs.get(job_id)).status == "failed" and j, 60, "the job to fail")
    assert "SIGKILL" in failed.error.message
    now = status(live_server, name)
    assert now["live_version"] == "v1" and "SIGKILL" in (now["last_failure"] or "")
    reply = client.chat.completions.create(model=name, messages=QUESTION, max_tokens=8)
    assert reply.system_fingerprint == "v1"
    again = wait_until(
        lambda: [j for j in jobs.for_persona(name) if j.id != job_id and j.status == "succeeded"],
        900,
        "the retried job to finish",
        every=0.5,
    )
    assert again[0].version == 2
    metadata = (folder / "adapters" / "v2" / "metadata.json").read_text()
    assert '"resumed_from": ' in metadata and '"resumed_from": null' not in metadata
