"""Growing a thin persona from the command line: generate examples with the bundled model, accept them,
train a few steps, and find the real, generated and replay examples counted in the version."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.real

NAME = "wren-thin"
REAL_LINES = 60
"""Lines of the bakery transcript kept: about thirty of the character's turns, in a few sessions."""


def thin_copy(root: Path) -> Path:
    """A copy of the example persona Wren with only the start of one transcript as logs."""
    folder = root / NAME
    (folder / "logs").mkdir(parents=True)
    lines = (REPO / "personas" / "wren" / "logs" / "shop_counter.txt").read_text(encoding="utf-8").splitlines()
    (folder / "logs" / "shop_counter.txt").write_text("\n".join(lines[:REAL_LINES]) + "\n", encoding="utf-8")
    card = yaml.safe_load((REPO / "personas" / "wren" / "persona.yaml").read_text(encoding="utf-8"))
    card["training"] = {"min_examples": 5}
    (folder / "persona.yaml").write_text(yaml.safe_dump(card), encoding="utf-8")
    return folder


def persona_cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, f"persona {' '.join(args)}:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    return run


def test_augmented_persona_trains_on_real_generated_and_replay_examples(live_server, tmp_path, cache_dir) -> None:
    from store.base_model import resolve_base_model
    from store.registry import PersonaStore
    from store.synthetic import accepted, all_examples
    from training.ingest import ExampleSettings, build_examples, load_logs
    from training.replay import replay_conversations, replay_count

    root = tmp_path / "personas"
    folder = thin_copy(root)
    env = {**os.environ, "PERSONA_PERSONAS_DIR": str(root), "PERSONA_CACHE_DIR": str(cache_dir)}

    generated = persona_cli("augment", NAME, "--n", "8", "--generator-url", live_server.url + "/v1", env=env)
    assert f"{NAME}: 8 generated" in generated.stdout
    made = all_examples(folder)
    assert len(made) == 8 and [path.name for path in (folder / "logs").iterdir()] == ["shop_counter.txt"]
    pending = [e for e in made if e.status == "pending"]
    assert pending, f"every generated example was rejected: {[e.reason for e in made]}"

    reviewed = persona_cli("review", NAME, env=env, stdin="A\n")  # accept the rest of the batch
    assert f"{len(pending)} accepted" in reviewed.stdout
    assert len(accepted(folder)) == len(pending)

    trained = persona_cli("train", NAME, "--max-steps", "2", env=env)
    assert f"{NAME}: published v1" in trained.stdout

    persona = PersonaStore(root).get(NAME)
    counts = persona.metadata(1).examples
    examples = build_examples(
        load_logs(persona.logs_dir), NAME, persona.card, ExampleSettings.from_overrides(persona.card.training)
    )
    base = resolve_base_model("bundled", cache_dir)
    available = len(replay_conversations(cache_dir, base, None))  # made by the run, cached for the next
    assert counts is not None
    assert counts.real == len(examples.train) > 0
    assert counts.synthetic == len(pending)
    assert counts.replay == replay_count(0.1, counts.real + counts.synthetic, available) > 0
    assert (
        f"training on {counts.real} real, {counts.synthetic} generated (accepted) and {counts.replay} "
        "general-conversation (replay) examples" in trained.stderr
    )
    report = (folder / "adapters" / "v1" / "report.md").read_text(encoding="utf-8")
    assert f"{counts.synthetic} generated (weight 0.5)" in report
