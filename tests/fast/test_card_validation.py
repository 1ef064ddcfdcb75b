"""The whole card is checked when it is read, written, uploaded or imported: a typo in ``training:``,
``privacy:`` or ``fidelity:`` is refused there, naming the file and the field, not later by a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from store.card import PersonaCard, load_card, write_card
from store.errors import CardError
from store.registry import PersonaStore
from training.ingest import ExampleSettings, import_card

TYPO = "training:\n  learnig_rate: 1e-3\n"


def persona(root: Path, name: str, card: str) -> Path:
    folder = root / name
    (folder / "logs").mkdir(parents=True)
    (folder / "logs" / "chat.txt").write_text("Tom: hi\nWren: hello petal\n" * 3)
    (folder / "persona.yaml").write_text(card)
    return folder


def test_a_training_typo_is_refused_when_the_card_is_read(tmp_path: Path) -> None:
    folder = persona(tmp_path, "wren", TYPO)
    with pytest.raises(CardError) as caught:
        load_card(folder)
    assert str(caught.value).startswith(f"{folder / 'persona.yaml'}: field 'training.learnig_rate': unknown setting")
    assert "did you mean learning_rate?" in str(caught.value)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("training: {lora_r: 0}", "field 'training.lora_r': must be a positive integer, got 0"),
        ("training: {learning_rate: fast}", "field 'training.learning_rate': must be a number above 0"),
        ("training: {qlora: true, load_in_8bit: true}", "field 'training.load_in_8bit': load the base in 4-bit"),
        ("training: {window: 0}", "field 'training.window': must be a positive integer, got 0"),
        ("training: {session_gap_hours: 0}", "field 'training.session_gap_hours': must be a number above 0, got 0"),
        ("training: {name_prefixes: maybe}", "field 'training.name_prefixes': "),
        ("training: [lora_r]", "field 'training': must be a mapping of settings"),
        ("privacy: {allow: '+44 20 7946 0958'}", "field 'privacy.allow': must be a list of strings"),
        ("privacy: {enable: false}", "field 'privacy.enable': unknown setting"),
        ("privacy: {kinds: [fax]}", "field 'privacy.kinds.0': "),
        ("fidelity: {probs: 3}", "field 'fidelity.probs': unknown setting"),
        ("fidelity: {gate: {max_similarity_drop: -1}}", "field 'fidelity.gate.max_similarity_drop': "),
    ],
)
def test_every_section_is_checked_and_names_the_field(tmp_path: Path, section: str, message: str) -> None:
    folder = persona(tmp_path, "wren", section + "\n")
    with pytest.raises(CardError, match="^" + str(folder / "persona.yaml")) as caught:
        load_card(folder)
    assert message in str(caught.value)


def test_every_bad_field_is_named_at_once(tmp_path: Path) -> None:
    folder = persona(tmp_path, "wren", "training: {lora_r: 0, window: 0, lernig: 1}\nprivacy: {enabled: 3}\n")
    with pytest.raises(CardError) as caught:
        load_card(folder)
    for field in ("training.lora_r", "training.window", "training.lernig", "privacy.enabled"):
        assert f"field '{field}'" in str(caught.value)


def test_a_valid_card_keeps_its_training_overrides_as_written(tmp_path: Path) -> None:
    folder = persona(
        tmp_path, "wren", "training: {lora_r: 8, window: 3, session_gap_hours: 2}\nprivacy: {allow: [x]}\n"
    )
    card = load_card(folder)
    assert card.training == {"lora_r": 8, "window": 3, "session_gap_hours": 2}
    assert ExampleSettings.from_overrides(card.training).window == 3
    assert card.privacy.allow == ("x",) and card.privacy.enabled is True
    assert card.fidelity.sessions == 4  # the defaults when the section is absent


def test_the_store_reports_a_broken_card_as_a_problem_with_its_reason(tmp_path: Path) -> None:
    persona(tmp_path, "good", "")
    persona(tmp_path, "wren", TYPO)
    store = PersonaStore(tmp_path)
    personas, problems = store.scan()
    assert [p.name for p in personas] == ["good"]
    assert "field 'training.learnig_rate': unknown setting" in problems["wren"]
    assert str(tmp_path / "wren" / "persona.yaml") in problems["wren"]
    with pytest.raises(CardError, match="training.learnig_rate"):
        store.get("wren")


def test_persona_ingest_reports_the_broken_card(tmp_path: Path) -> None:
    persona(tmp_path, "wren", TYPO)
    result = CliRunner().invoke(app, ["ingest", "wren", "--personas-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "field 'training.learnig_rate': unknown setting" in result.output
    as_json = CliRunner().invoke(app, ["ingest", "wren", "--json", "--personas-dir", str(tmp_path)])
    assert as_json.exit_code == 1
    assert "training.learnig_rate" in json.loads(as_json.stdout)["error"]["message"]


def test_no_card_is_written_that_would_not_read_back(tmp_path: Path) -> None:
    """Uploads and ``persona import-card`` write through ``write_card``; a card changed without validation
    (``model_copy``) is refused there, and the folder keeps no file."""
    folder = tmp_path / "wren"
    folder.mkdir()
    bad = PersonaCard(speakers=["Wren"]).model_copy(update={"training": {"learnig_rate": 1e-3}})
    with pytest.raises(CardError, match="field 'training.learnig_rate': unknown setting"):
        write_card(folder, bad)
    assert not (folder / "persona.yaml").exists()
    good = PersonaCard(speakers=["Wren"], training={"lora_r": 4}, privacy={"allow": ["x"]}, fidelity={"probes": 2})
    write_card(folder, good)
    assert load_card(folder) == good


def test_an_imported_sillytavern_card_is_validated_and_reads_back(tmp_path: Path) -> None:
    source = tmp_path / "mara.json"
    source.write_text(json.dumps({"name": "Mara", "description": "A captain.", "first_mes": "Who let you aboard?"}))
    result = CliRunner().invoke(app, ["import-card", "mara", str(source), "--personas-dir", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    card = load_card(tmp_path / "p" / "mara")
    assert card == import_card(source) and card.greeting == "Who let you aboard?"
