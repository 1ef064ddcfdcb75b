"""Training through the command line while the server runs: the new version is served at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.real

QUESTION = [{"role": "user", "content": "What's fresh in the shop this morning?"}]


def test_trained_version_goes_live_and_changes_the_replies(client, live_server) -> None:
    name = "wren-trained"
    folder = live_server.personas_dir / name
    shutil.copytree(live_server.personas_dir / "wren", folder, ignore=shutil.ignore_patterns("adapters"))
    with open(folder / "persona.yaml", "a") as card:  # the worker's fidelity report, kept small
        card.write(
            "fidelity:\n  heldout_prompts: 4\n  probes: 2\n  sessions: 2\n  perplexity_examples: 8\n  max_tokens: 24\n"
            "  dialogue_turns: 0\n"
        )

    before = client.chat.completions.create(model=name, messages=QUESTION, temperature=0, max_tokens=32)
    assert before.system_fingerprint == "card"

    env = {
        **os.environ,
        "PERSONA_PERSONAS_DIR": str(live_server.personas_dir),
        "PERSONA_CACHE_DIR": live_server.env["PERSONA_CACHE_DIR"],
    }
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", "train", name, "--max-steps", "4", "--learning-rate", "0.003"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{name}: published v1" in run.stdout

    models = {m.id: m for m in client.models.list().data}
    assert f"{name}@v1" in models
    assert models[name].model_extra["persona"]["status"] == "trained"

    after = client.chat.completions.create(model=name, messages=QUESTION, temperature=0, max_tokens=32)
    assert after.system_fingerprint == "v1"
    assert after.choices[0].message.content != before.choices[0].message.content

    status = client.get(f"/personas/{name}", cast_to=object)
    assert status["live_version"] == "v1"
    assert status["versions"][0]["eval_loss_after"] is not None
    assert status["training"]["state"] == "done"
    metadata = (folder / "adapters" / "v1" / "metadata.json").read_text()
    assert '"base_hash"' in metadata and (folder / "adapters" / "v1" / "loss.png").is_file()
