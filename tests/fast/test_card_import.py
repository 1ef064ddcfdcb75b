"""Seeding persona.yaml from SillyTavern character cards (V2 JSON, V1 JSON, PNG)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from store.card import load_card, write_card
from training.ingest import CardImportError, import_card

V2 = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Captain Mara Vell",
        "description": "{{char}} commands the airship Kestrel. She distrusts {{user}} at first.",
        "personality": "gruff, loyal, dry humour",
        "scenario": "The Kestrel is docked in a storm.",
        "first_mes": "*{{char}} looks up from the charts.* Who let you aboard?",
        "mes_example": "<START>\n{{user}}: Where are we headed?\n{{char}}: Wherever the wind pays best.\n"
        "{{user}}: Is the ship safe?\n{{char}}: Safer than you.",
        "creator_notes": "",
        "system_prompt": "",
        "tags": ["airship"],
    },
}


def png_card(path: Path, payload: dict | None, keyword: str = "chara") -> Path:
    info = PngInfo()
    if payload is not None:
        info.add_text(keyword, base64.b64encode(json.dumps(payload).encode("utf-8")).decode("ascii"))
    Image.new("RGB", (4, 4), "purple").save(path, pnginfo=info)
    return path


def test_v2_json_maps_to_a_persona_card(tmp_path):
    path = tmp_path / "mara.json"
    path.write_text(json.dumps(V2), encoding="utf-8")
    card = import_card(path)
    assert card.display_name == "Captain Mara Vell"
    assert card.speakers == ["Captain Mara Vell"]
    assert card.greeting == "*Captain Mara Vell looks up from the charts.* Who let you aboard?"
    assert card.description.startswith("Captain Mara Vell commands the airship Kestrel. She distrusts you at first.")
    assert "gruff, loyal, dry humour" in card.description
    assert card.system_prompt == "You are Captain Mara Vell. Personality: gruff, loyal, dry humour."
    assert card.example_questions == ["Where are we headed?", "Is the ship safe?"]
    assert "{{" not in card.model_dump_json()


def test_v1_flat_json(tmp_path):
    path = tmp_path / "v1.json"
    path.write_text(
        json.dumps({"name": "Pip", "description": "A cheerful robot.", "first_mes": "Beep!"}), encoding="utf-8"
    )
    card = import_card(path)
    assert (card.display_name, card.speakers, card.greeting) == ("Pip", ["Pip"], "Beep!")
    assert card.system_prompt == "You are Pip. A cheerful robot."


def test_png_card_reads_the_chara_chunk(tmp_path):
    from_png = import_card(png_card(tmp_path / "mara.png", V2))
    json_path = tmp_path / "mara.json"
    json_path.write_text(json.dumps(V2), encoding="utf-8")
    assert from_png == import_card(json_path)


def test_imported_card_round_trips_through_persona_yaml(tmp_path):
    card = import_card(png_card(tmp_path / "mara.png", V2))
    folder = tmp_path / "persona"
    folder.mkdir()
    write_card(folder, card)
    assert load_card(folder) == card


def test_long_descriptions_are_shortened_at_a_sentence(tmp_path):
    long = {"name": "Ada", "description": "She likes engines. " * 200, "personality": ""}
    path = tmp_path / "ada.json"
    path.write_text(json.dumps(long), encoding="utf-8")
    card = import_card(path)
    assert len(card.description) <= 1200 and card.description.endswith("engines.")
    assert len(card.system_prompt) < 320


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("plain.png", None, "no 'chara' text chunk"),
        ("notes.txt", "just some notes", "bad JSON"),
        ("list.json", "[1, 2]", "expected a JSON object"),
        ("nameless.json", json.dumps({"spec": "chara_card_v2", "data": {"description": "x"}}), "no 'name' field"),
        ("garbage.png", b"\x89PNG\r\n\x1a\nnot really", "not a readable PNG"),
    ],
)
def test_files_that_are_not_cards_are_refused_by_name(tmp_path, name, content, reason):
    path = tmp_path / name
    if content is None:
        png_card(path, None)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CardImportError, match=reason) as caught:
        import_card(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_missing_file_is_refused_by_name(tmp_path):
    with pytest.raises(CardImportError, match="missing.png"):
        import_card(tmp_path / "missing.png")


V3 = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        **V2["data"],
        "name": "Captain Mara Vell of the Kestrel",
        "nickname": "Mara",
        "first_mes": "{{char}} here. State your business.",
        "group_only_greetings": [],
        "assets": [],
    },
}


def test_v3_png_prefers_the_ccv3_chunk_and_uses_the_nickname(tmp_path):
    path = tmp_path / "card.png"
    info = PngInfo()
    info.add_text("chara", base64.b64encode(json.dumps(V2).encode()).decode("ascii"))
    info.add_text("ccv3", base64.b64encode(json.dumps(V3).encode()).decode("ascii"))
    Image.new("RGB", (4, 4), "purple").save(path, pnginfo=info)
    card = import_card(path)
    assert card.display_name == "Captain Mara Vell of the Kestrel"
    assert card.speakers == ["Captain Mara Vell of the Kestrel", "Mara"]
    assert card.greeting == "Mara here. State your business."


def test_charx_zip_reads_its_card_json(tmp_path):
    import zipfile

    path = tmp_path / "mara.charx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("card.json", json.dumps(V3))
        archive.writestr("assets/icon/main.png", b"not really a png")
    assert import_card(path).speakers[-1] == "Mara"
    empty = tmp_path / "empty.charx"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("readme.txt", "no card")
    with pytest.raises(CardImportError, match="empty.charx: CHARX file without card.json"):
        import_card(empty)
