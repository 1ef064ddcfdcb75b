"""``persona eval`` refuses what it cannot evaluate with one clear line, before any server is started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from store.adapters import METADATA_FILE, AdapterMetadata

NO_SERVER = "http://127.0.0.1:9/v1"  # nothing listens there: reaching it would fail differently


def make_persona(root: Path, name: str, conversations: int, card: str = "") -> Path:
    folder = root / name
    (folder / "logs").mkdir(parents=True)
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"question {i}?"},
                    {"role": "assistant", "content": f"answer {i}, petal"},
                ]
            }
        )
        for i in range(conversations)
    ]
    (folder / "logs" / "chats.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "persona.yaml").write_text(card)
    return folder


def add_version(folder: Path, base_hash: str) -> None:
    version = folder / "adapters" / "v1"
    version.mkdir(parents=True)
    meta = AdapterMetadata(base_model="SmolLM2-135M-Instruct", base_hash=base_hash)
    (version / METADATA_FILE).write_text(meta.model_dump_json())
    (folder / "adapters" / "LIVE").write_text("v1\n")


@pytest.fixture()
def persona_eval(tmp_path, base_model):
    def run(*args: str):
        result = CliRunner().invoke(
            app,
            [
                "eval",
                *args,
                "--personas-dir",
                str(tmp_path),
                "--base-model",
                str(base_model.path),
                "--server",
                NO_SERVER,
            ],
        )
        return result.exit_code, result.output

    return run


def test_an_unknown_persona_or_version_is_named(tmp_path, base_model, persona_eval) -> None:
    assert persona_eval("ghost")[0] == 1 and "no persona named 'ghost'" in persona_eval("ghost")[1]
    make_persona(tmp_path, "wren", 40)
    code, output = persona_eval("wren")
    assert code == 1 and "has no live version" in output
    add_version(tmp_path / "wren", base_model.hash)
    code, output = persona_eval("wren", "--version", "v7")
    assert code == 1 and "has no adapter version v7" in output
    code, output = persona_eval("wren", "--version", "7")
    assert code == 1 and "invalid adapter version '7'" in output


def test_an_adapter_of_another_base_model_is_refused(tmp_path, persona_eval) -> None:
    add_version(make_persona(tmp_path, "wren", 40), "f" * 64)
    code, output = persona_eval("wren")
    assert code == 1 and "trained on base model" in output


def test_logs_without_held_out_sessions_are_refused(tmp_path, persona_eval) -> None:
    add_version(make_persona(tmp_path, "wren", 40, "training: {heldout_fraction: 0.0, min_examples: 1}\n"), "0")
    code, output = persona_eval("wren")
    assert code == 1 and "no held-out sessions" in output


def test_a_bad_fidelity_setting_names_the_file_and_field(tmp_path, persona_eval) -> None:
    make_persona(tmp_path, "wren", 40, "fidelity: {sessions: 1}\n")
    code, output = persona_eval("wren")
    assert code == 1 and "persona.yaml: field 'fidelity.sessions'" in output


def test_gate_needs_a_version(tmp_path, persona_eval) -> None:
    code, output = persona_eval("wren", "--gate")
    assert code == 1 and "--gate needs --version" in output
