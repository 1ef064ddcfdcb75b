"""Creating a persona in the page, as a new user does: pick exports, read the report, Train, then chat.

The server runs on a personas folder of its own with no worker beside it, so the new persona's job
waits in the queue (the page shows it queued) until the test has given the card a short training
run and started ``persona worker`` on the same store, as a training machine would be. Screenshots go
to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.chat_page import ChatPage
from tests.conftest import ARTIFACTS, REPO, LiveServer
from tests.support.polling import wait_until

pytestmark = pytest.mark.browser

WREN_LOGS = sorted((REPO / "personas" / "wren" / "logs").iterdir())
SHORT_TRAINING = (
    "training:\n  max_steps: 3\n  learning_rate: 0.003\n"
    "fidelity:\n  heldout_prompts: 4\n  probes: 2\n  sessions: 2\n  perplexity_examples: 8\n  max_tokens: 24\n"
    "  dialogue_turns: 0\n"
)
TRAINED_WITHIN_S = 600


@pytest.fixture(scope="module")
def server(tmp_path_factory, cache_dir: Path, base_model) -> Iterator[LiveServer]:
    """``persona serve`` on an empty personas folder, with no worker of its own (``--no-train``)."""
    root = tmp_path_factory.mktemp("new-persona") / "personas"
    root.mkdir(parents=True)
    server = LiveServer(root, cache_dir, ARTIFACTS / "new-persona-server.log")
    server.env["PERSONA_TRAIN"] = "false"
    server.env["PERSONA_AUTO_TRAIN"] = "false"
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def worker(server: LiveServer) -> Iterator[Callable[[], None]]:
    """Start ``persona worker`` on the server's store when asked; stopped after the test."""
    started: list[subprocess.Popen] = []

    def start() -> None:
        log = open(ARTIFACTS / "new-persona-worker.log", "w")  # noqa: SIM115 (closed with the process)
        env = {**server.env, "PERSONA_TRAIN_THREADS": "1"}
        started.append(
            subprocess.Popen([sys.executable, "-m", "cli.main", "worker"], cwd=REPO, env=env, stdout=log, stderr=log)
        )

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def card_text(page: ChatPage) -> str:
    return page.page.locator("#persona-card").inner_text()


def test_create_a_persona_in_the_page_and_chat_with_it_once_trained(browser, server, worker) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = ChatPage(context.new_page(), server.url, "new-persona")
        page.page.goto(server.url + "/ui", wait_until="domcontentloaded")
        expect(page.page.locator("#persona-card")).to_contain_text("No personas yet", timeout=60_000)
        page.page.get_by_role("tab", name="New persona").click()
        files = page.page.locator("#new-files input[type=file]")
        error = page.page.locator("#new-error")

        empty = server.personas_dir.parent / "empty.txt"
        empty.write_text("")
        files.set_input_files([str(empty)])
        expect(error).to_contain_text("empty.txt: the file is empty", timeout=60_000)
        page.shot("01-empty-file")
        page.page.locator("#new-files button[aria-label='Clear']").first.click()

        files.set_input_files([str(path) for path in WREN_LOGS])
        report = page.page.locator("#new-report")
        expect(report).to_contain_text("WhatsApp chat export", timeout=120_000)
        expect(report).to_contain_text("OpenAI chat JSONL")
        expect(report).to_contain_text("not obvious")
        expect(error).to_be_hidden()
        page.shot("02-report")

        page.page.locator("#new-name input, #new-name textarea").first.fill("Baker Wren")
        page.click("new-train")
        expect(error).to_contain_text("name", timeout=30_000)
        assert not (server.personas_dir / "baker").exists(), "nothing is stored for a refused name"

        page.page.locator("#new-name input, #new-name textarea").first.fill("baker")
        speakers = page.page.locator("#new-speakers input")
        expect(speakers).to_be_visible()
        for name in ("Wren", "Auntie Wren"):
            speakers.click()
            page.page.get_by_role("option", name=re.compile(rf"^\W*{re.escape(name)}\s*$")).click()
        page.page.keyboard.press("Escape")
        page.shot("03-speakers")
        page.click("new-train")

        expect(page.page.locator("#persona-card")).to_contain_text("queued", timeout=60_000)
        assert page.page.locator("#persona-picker input").input_value().startswith("Baker")
        logs = server.personas_dir / "baker" / "logs"
        assert sorted(p.name for p in logs.iterdir()) == [p.name for p in WREN_LOGS]
        assert all((logs / p.name).read_bytes() == p.read_bytes() for p in WREN_LOGS), "files land as uploaded"
        page.set_slider("temperature", 0)
        page.set_slider("max-tokens", 16)
        page.shot("04-queued")

        with open(server.personas_dir / "baker" / "persona.yaml", "a") as card:
            card.write(SHORT_TRAINING)
        worker()
        seen: set[str] = set()

        def trained() -> bool:
            text = card_text(page)
            seen.add(" ".join(text.split()))
            assert "failed" not in text, f"training failed; see {ARTIFACTS / 'new-persona-worker.log'}"
            return "trained v1" in text

        wait_until(trained, TRAINED_WITHIN_S, lambda: f"baker to be trained; the page showed {seen}", every=0.5)
        assert any(re.search(r"\btraining( \d+%)?$", shown) for shown in seen), seen
        page.shot("05-trained")

        assert page.send("What's fresh this morning?")
        assert page.caption() == "baker · v1"
        page.shot("06-reply")
    finally:
        context.close()
