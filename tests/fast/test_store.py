"""The persona store on disk: names, cards, versions, the live pointer, publishing."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from store.adapters import (
    ADAPTER_WEIGHTS,
    LIVE_FILE,
    METADATA_FILE,
    AdapterMetadata,
    check_servable,
    list_versions,
    new_staging_dir,
    publish,
    read_live,
    set_live,
    store_weights,
)
from store.card import CardError, load_card
from store.errors import BaseModelMismatch, InvalidName, PersonaNotFound, StoreError, VersionNotFound
from store.names import check_name, persona_dir
from store.registry import PersonaStore, check_same_base


@pytest.mark.parametrize("name", ["wren", "a", "zeph-2", "x_y", "0abc", "a" * 64])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "..", "../etc", "a/b", "Wren", "-x", "_x", "a" * 65, "a b", "a.b", "ä", "a\x00"])
def test_unsafe_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidName):
        persona_dir(tmp_path, name)


def stage(persona: Path, base_hash: str = "h" * 64, r: int = 8, extra: dict | None = None) -> Path:
    staged = new_staging_dir(persona)
    config = {"peft_type": "LORA", "r": r, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], **(extra or {})}
    (staged / "adapter_config.json").write_text(json.dumps(config))
    (staged / "adapter_model.safetensors").write_bytes(b"weights")
    (staged / METADATA_FILE).write_text(AdapterMetadata(base_model="base", base_hash=base_hash).model_dump_json())
    return staged


def test_float32_adapter_weights_are_stored_in_bfloat16(tmp_path: Path) -> None:
    """Half the bytes for the server to read at each load, with float32's range: a lightly trained
    adapter's tiny weights keep their magnitude. Weights in another dtype are kept as they are."""
    import torch
    from safetensors.torch import load_file, save_file

    staged = stage(tmp_path / "wren")
    generator = torch.Generator().manual_seed(0)
    weights = {
        "q.lora_A.weight": torch.randn(8, 256, generator=generator),
        "q.lora_B.weight": torch.randn(256, 8, generator=generator) * 1e-30,
        "v.lora_A.weight": torch.randn(8, 256, generator=generator).half(),
    }
    save_file(weights, str(staged / ADAPTER_WEIGHTS))
    before = (staged / ADAPTER_WEIGHTS).stat().st_size
    store_weights(staged)
    stored = load_file(staged / ADAPTER_WEIGHTS)
    assert stored.keys() == weights.keys()
    for name in ("q.lora_A.weight", "q.lora_B.weight"):
        assert stored[name].dtype == torch.bfloat16
        assert torch.allclose(stored[name].float(), weights[name], rtol=2**-8, atol=0)
    assert stored["v.lora_A.weight"].dtype == torch.float16 and torch.equal(
        stored["v.lora_A.weight"], weights["v.lora_A.weight"]
    )
    assert (staged / ADAPTER_WEIGHTS).stat().st_size < 0.7 * before


def test_card_defaults_when_absent(tmp_path: Path) -> None:
    store = PersonaStore(tmp_path)
    persona = store.create("wren")
    assert persona.card.speakers == [] and persona.live is None and persona.versions == []
    assert persona.title == "Wren"
    assert persona.system_prompt == "You are Wren."


def test_card_errors_name_file_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "wren"
    folder.mkdir()
    (folder / "persona.yaml").write_text("sampling:\n  temperature: 9\nspeakers: Wren\n")
    with pytest.raises(CardError) as error:
        load_card(folder)
    message = str(error.value)
    assert str(folder / "persona.yaml") in message
    assert "sampling.temperature" in message and "speakers" in message
    (folder / "persona.yaml").write_text("colour: blue\n")
    with pytest.raises(CardError, match="colour"):
        load_card(folder)
    (folder / "persona.yaml").write_text("display_name: [unclosed\n")
    with pytest.raises(CardError, match="YAML"):
        load_card(folder)
    (folder / "persona.yaml").write_text("picture: ../../etc/passwd\n")
    with pytest.raises(CardError, match="picture"):
        load_card(folder)


def test_one_bad_card_hides_no_other(tmp_path: Path) -> None:
    (tmp_path / "good" / "logs").mkdir(parents=True)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "persona.yaml").write_text("- a list\n")
    (tmp_path / "Not-A-Name").mkdir()
    (tmp_path / "stray.txt").write_text("x")
    personas, problems = PersonaStore(tmp_path).scan()
    assert [p.name for p in personas] == ["good"]
    assert list(problems) == ["bad"] and "mapping" in problems["bad"]
    with pytest.raises(PersonaNotFound):
        PersonaStore(tmp_path).get("missing")


def test_publish_numbers_versions_and_swaps_live(tmp_path: Path) -> None:
    persona = PersonaStore(tmp_path).create("wren").path
    assert publish(persona, stage(persona)) == 1
    assert publish(persona, stage(persona)) == 2
    assert list_versions(persona) == [1, 2] and read_live(persona) == 2
    assert not [p for p in (persona / "adapters").iterdir() if p.name.startswith(".staging")]
    set_live(persona, 1)  # rollback
    assert read_live(persona) == 1
    assert (persona / "adapters" / LIVE_FILE).read_text().strip() == "v1"
    with pytest.raises(VersionNotFound):
        set_live(persona, 7)
    assert read_live(persona) == 1


def test_publish_without_metadata_is_refused_and_live_kept(tmp_path: Path) -> None:
    persona = PersonaStore(tmp_path).create("wren").path
    publish(persona, stage(persona))
    broken = new_staging_dir(persona)
    with pytest.raises(StoreError, match="metadata"):
        publish(persona, broken)
    assert read_live(persona) == 1 and list_versions(persona) == [1]


def test_half_written_versions_are_not_listed(tmp_path: Path) -> None:
    persona = PersonaStore(tmp_path).create("wren").path
    stage(persona)  # never published
    (persona / "adapters" / "v5").mkdir()  # no metadata
    (persona / "adapters" / LIVE_FILE).write_text("v5")
    assert list_versions(persona) == [] and read_live(persona) is None


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path) -> None:
    persona = PersonaStore(tmp_path).create("wren").path
    staged = [stage(persona) for _ in range(6)]
    results: list[int] = []
    threads = [threading.Thread(target=lambda s=s: results.append(publish(persona, s))) for s in staged]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [1, 2, 3, 4, 5, 6]


def test_servable_checks(tmp_path: Path) -> None:
    persona = PersonaStore(tmp_path).create("wren").path
    assert check_servable(stage(persona), 16).r == 8
    with pytest.raises(StoreError, match="'r'"):
        check_servable(stage(persona, r=32), 16)
    with pytest.raises(StoreError, match="modules_to_save"):
        check_servable(stage(persona, extra={"modules_to_save": ["lm_head"]}), 16)
    with pytest.raises(StoreError, match="target_modules"):
        check_servable(stage(persona, extra={"target_modules": ["embed_tokens"]}), 16, {"q_proj", "v_proj"})


def test_adapter_for_another_base_is_refused(tmp_path: Path) -> None:
    meta = AdapterMetadata(base_model="other-model", base_hash="a" * 64)
    check_same_base(meta, "a" * 64, "base", tmp_path)
    with pytest.raises(BaseModelMismatch, match="other-model"):
        check_same_base(meta, "b" * 64, "SmolLM2-135M-Instruct", tmp_path)


def test_base_model_from_local_folder_and_missing(tmp_path: Path, base_model) -> None:
    from store.base_model import resolve_base_model

    same = resolve_base_model(str(base_model.path), tmp_path / "cache")
    assert same.hash == base_model.hash and same.id == base_model.id
    with pytest.raises(StoreError, match="does not exist"):
        resolve_base_model(str(tmp_path / "nowhere"), tmp_path / "cache")
    with pytest.raises(StoreError, match="PERSONA_ALLOW_DOWNLOAD"):
        resolve_base_model("some-org/some-model-that-is-not-cached", tmp_path / "cache")
