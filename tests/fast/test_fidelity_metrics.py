"""The report's figures on small fixed vectors and texts with known answers (no embedding model)."""

from __future__ import annotations

import numpy as np
import pytest

from training.fidelity import metrics

E = np.eye(4)  # four mutually unrelated directions


def test_cosine_of_identical_vectors_is_one_and_of_unrelated_ones_zero() -> None:
    sims = metrics.cosine_matrix(np.array([[1.0, 2.0, 0, 0], [0, 0, 3.0, 0]]), np.array([[2.0, 4.0, 0, 0]]))
    assert sims[:, 0] == pytest.approx([1.0, 0.0])


def test_pair_similarity_matches_each_reply_with_its_own_real_reply() -> None:
    real = E[:2]
    assert metrics.pair_similarity(real * 5, real) == pytest.approx(1.0)
    assert metrics.pair_similarity(real[::-1], real) == pytest.approx(0.0)  # right words, wrong prompts
    with pytest.raises(ValueError, match="as many generated as real"):
        metrics.pair_similarity(E[:3], E[:2])


def test_centroid_similarity_and_the_leave_one_out_ceiling() -> None:
    real = E[:2]  # centroid (0.5, 0.5, 0, 0): each real reply has cosine 1/sqrt(2) with it
    assert metrics.centroid_similarity(real, real) == pytest.approx(1 / np.sqrt(2))
    assert metrics.centroid_similarity(E[2:], real) == pytest.approx(0.0)
    # Leaving a reply out, the centroid of the other one is unrelated to it: the ceiling is 0 ...
    assert metrics.leave_one_out_ceiling(real) == pytest.approx(0.0)
    # ... and a character who always says the same thing has ceiling 1.
    assert metrics.leave_one_out_ceiling(np.tile(E[0], (3, 1))) == pytest.approx(1.0)


def test_classifier_tells_separable_replies_apart_and_not_identical_ones() -> None:
    rng = np.random.default_rng(0)
    real = E[0] + 0.05 * rng.standard_normal((20, 4))
    far = E[1] + 0.05 * rng.standard_normal((20, 4))
    assert metrics.classifier_accuracy(far, real) == pytest.approx(1.0)
    # The same replies on both sides: no classifier can do better than chance.
    same = rng.standard_normal((20, 4))
    assert metrics.classifier_accuracy(same, same) <= 0.55


def test_session_variation_is_zero_for_a_steady_voice_and_one_for_unrelated_replies() -> None:
    steady = [np.tile(E[0], (4, 1)), np.tile(E[1], (4, 1))]
    assert metrics.session_variation(steady) == pytest.approx(0.0)
    assert metrics.session_variation([E]) == pytest.approx(1.0)
    assert metrics.session_variation([np.tile(E[0], (4, 1)), E]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="two sessions"):
        metrics.session_variation([E[:1]])


def test_marker_rates_count_replies_with_any_marker_ignoring_case() -> None:
    texts = ["Oh CRUMBS, petal!", "Hello there.", "Petals everywhere", "crumbsy biscuits"]
    rate, per_marker = metrics.marker_rates(texts, [r"\bcrumbs\b", r"\bpetals?\b"])
    assert rate == pytest.approx(0.5)
    assert per_marker == {r"\bcrumbs\b": 0.25, r"\bpetals?\b": 0.5}


def test_prompt_tokens_per_request_is_the_mean() -> None:
    assert metrics.prompt_tokens_per_request([60, 62, 64]) == pytest.approx(62.0)
    with pytest.raises(ValueError):
        metrics.prompt_tokens_per_request([])
