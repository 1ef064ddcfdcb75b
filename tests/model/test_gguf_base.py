"""A GGUF file named as the base model is converted once into the cache and shared like the bundled one."""

from __future__ import annotations

import shutil
from pathlib import Path


def test_a_gguf_file_is_converted_once_and_is_the_same_base_as_its_weights(tmp_path: Path, base_model) -> None:
    from store.base_model import bundled_gguf, resolve_base_model

    gguf = tmp_path / "models" / "my-smol.gguf"
    gguf.parent.mkdir()
    shutil.copyfile(bundled_gguf(), gguf)
    first = resolve_base_model(str(gguf), tmp_path / "cache")
    assert first.id == "my-smol" and (first.path / "config.json").is_file()
    assert first.hash == base_model.hash, "the same weights are the same base, whatever the file is called"
    weights = next(first.path.glob("*.safetensors"))
    converted_at = weights.stat().st_mtime_ns
    again = resolve_base_model(str(gguf), tmp_path / "cache")
    assert again == first and weights.stat().st_mtime_ns == converted_at, "converted once, then reused"
