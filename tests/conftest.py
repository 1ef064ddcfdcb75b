"""Fixtures shared by every tier."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Where the converted base model is cached; the Makefile and tests share it."""
    return Path(os.environ.get("PERSONA_CACHE_DIR", REPO / ".cache")).resolve()


@pytest.fixture(scope="session")
def base_model(cache_dir: Path):
    """The bundled SmolLM2 as a safetensors folder (converted once, then reused)."""
    from store.base_model import resolve_base_model

    return resolve_base_model("bundled", cache_dir)
