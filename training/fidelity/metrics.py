"""The report's figures, as pure functions of embeddings, texts and counts (no model here).

Embeddings are rows of a 2-D array; they need not be normalised (cosine is taken here). Each function
says which way is better.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "centroid_similarity",
    "classifier_accuracy",
    "cosine_matrix",
    "leave_one_out_ceiling",
    "marker_rates",
    "pair_similarity",
    "prompt_tokens_per_request",
    "session_variation",
]


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of every row of ``a`` with every row of ``b`` (a zero vector has cosine 0 with anything)."""
    return _unit(a) @ _unit(b).T


def pair_similarity(generated: np.ndarray, real: np.ndarray) -> float:
    """Mean cosine of each generated reply with the real reply to the same prompt. Higher is closer."""
    generated, real = np.atleast_2d(generated), np.atleast_2d(real)
    if len(generated) != len(real) or not len(real):
        raise ValueError(
            f"pair similarity needs as many generated as real replies, got {len(generated)} and {len(real)}"
        )
    return float(np.mean(np.sum(_unit(generated) * _unit(real), axis=1)))


def centroid_similarity(generated: np.ndarray, real: np.ndarray) -> float:
    """Mean cosine of each generated reply with the centroid of the real replies: the character's
    voice on average, whatever the prompt. Higher is closer."""
    centroid = np.mean(_unit(real), axis=0, keepdims=True)
    return float(np.mean(cosine_matrix(generated, centroid)))


def leave_one_out_ceiling(real: np.ndarray) -> float:
    """Each real reply's cosine with the centroid of the *other* real replies, averaged: what
    :func:`centroid_similarity` gives a system that talks exactly like the character (the ceiling)."""
    units = _unit(real)
    if len(units) < 2:
        raise ValueError("the leave-one-out ceiling needs at least two real replies")
    total = units.sum(axis=0)
    others = (total[None, :] - units) / (len(units) - 1)
    return float(np.mean(np.sum(units * _unit(others), axis=1)))


def classifier_accuracy(generated: np.ndarray, real: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a logistic regression telling generated replies from real ones.

    0.5 means it cannot tell them apart (the goal); 1.0 means every generated reply gives itself away.
    Classes are balanced by taking as many of each as the smaller side has.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    size = min(len(generated), len(real))
    if size < 2:
        raise ValueError("the classifier needs at least two generated and two real replies")
    x = np.vstack([_unit(generated)[:size], _unit(real)[:size]])
    y = np.array([1] * size + [0] * size)
    splits = StratifiedKFold(n_splits=min(folds, size), shuffle=True, random_state=seed)
    scores = cross_val_score(LogisticRegression(max_iter=1000), x, y, cv=splits)
    return float(np.mean(scores))


def session_variation(groups: Sequence[np.ndarray]) -> float:
    """How much replies to the same question vary between fresh sessions: 1 − the mean pairwise cosine
    of the replies in each group (one group per probe question, one row per session), averaged over
    the groups. 0 is the same reply every time; lower is a steadier voice."""
    values = []
    for group in groups:
        units = _unit(group)
        n = len(units)
        if n < 2:
            continue
        sims = units @ units.T
        values.append(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))
    if not values:
        raise ValueError("session variation needs at least one question answered in two sessions")
    return float(np.mean(values))


def marker_rates(texts: Sequence[str], markers: Sequence[str]) -> tuple[float, dict[str, float]]:
    """Share of ``texts`` in which any of the card's ``voice_markers`` (regexes, any case) occurs, and
    the share for each marker. Closer to the real replies' rate is closer to the voice."""
    if not texts:
        raise ValueError("marker rates need at least one text")
    patterns = {marker: re.compile(marker, re.IGNORECASE) for marker in markers}
    hits = {marker: [bool(p.search(t)) for t in texts] for marker, p in patterns.items()}
    any_hit = [any(hits[m][i] for m in patterns) for i in range(len(texts))]
    return sum(any_hit) / len(texts), {m: sum(h) / len(texts) for m, h in hits.items()}


def prompt_tokens_per_request(counts: Sequence[int]) -> float:
    """Mean prompt tokens of the requests a system needed: the context a persona's prompt costs."""
    if not counts:
        raise ValueError("prompt tokens need at least one request")
    return float(sum(counts) / len(counts))
