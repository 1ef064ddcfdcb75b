"""Identity: is this the character speaking? A scorer trained per persona at report time.

The style figures compare embeddings, which measure *what* is said; a reply that answers the question
well in a generic assistant's voice scores high on them. Identity asks *who* is speaking: a logistic
regression over character n-grams (TF-IDF, which catch spelling, punctuation, pet phrases) and the
sentence embeddings the report already uses, trained on the persona's own training replies against
the other speakers' lines in the same logs and a generic assistant's replies (the base model's answers
to the same user turns). Its cross-validated AUC on those lines says how far to trust it; the real
held-out replies' own scores are the ceiling a system can reach.

    scorer = IdentityScorer.fit(character_lines, other_lines, embed=embedder)
    scorer.auc                       # cross-validated, 0.5 = cannot tell, 1.0 = always right
    scorer.score(["Aye, the kettle."])   # probability that the character said it
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["IDENTITY_THRESHOLD", "IdentityScorer", "IdentityUnavailable", "MIN_LINES"]

MIN_LINES = 8
"""Fewest lines on each side to train a scorer and cross-validate it."""
IDENTITY_THRESHOLD = 0.5
"""A reply is judged in character when the scorer gives it at least this probability (classes are
weighted to balance, so 0.5 is the even point)."""

Embed = Callable[[Sequence[str]], np.ndarray]


class IdentityUnavailable(ValueError):
    """Too few lines of the character or of the others to train an identity scorer; the message says which."""


def _clean(texts: Sequence[str]) -> list[str]:
    return [" ".join(str(t).split()) for t in texts]


@dataclass
class IdentityScorer:
    """A fitted per-persona identity classifier (see the module docstring)."""

    vectorizer: Any
    model: Any
    embed: Embed | None
    auc: float
    """Cross-validated ROC AUC on the training lines (character vs others)."""
    character_lines: int
    other_lines: int

    @staticmethod
    def _vectorizer() -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=1, max_features=50_000)

    @staticmethod
    def _classifier(seed: int) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000, random_state=seed)

    @staticmethod
    def _features(vectorizer: Any, texts: list[str], vectors: np.ndarray | None) -> Any:
        from scipy.sparse import csr_matrix, hstack

        grams = vectorizer.transform(texts)
        if vectors is None:
            return grams
        return hstack([grams, csr_matrix(np.asarray(vectors, dtype=np.float64))]).tocsr()

    @classmethod
    def fit(
        cls,
        character: Sequence[str],
        others: Sequence[str],
        *,
        embed: Embed | None = None,
        folds: int = 5,
        seed: int = 0,
    ) -> IdentityScorer:
        """Train on ``character`` (label 1) against ``others`` (label 0); the AUC is cross-validated with
        ``folds`` stratified folds, each fitting its own n-gram vocabulary. Raises :class:`IdentityUnavailable`
        with fewer than :data:`MIN_LINES` non-empty lines on a side."""
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold

        mine = [t for t in _clean(character) if t]
        theirs = [t for t in _clean(others) if t]
        if len(mine) < MIN_LINES or len(theirs) < MIN_LINES:
            raise IdentityUnavailable(
                f"an identity scorer needs at least {MIN_LINES} lines of the character and {MIN_LINES} of others; "
                f"got {len(mine)} and {len(theirs)}"
            )
        texts = mine + theirs
        labels = np.array([1] * len(mine) + [0] * len(theirs))
        vectors = embed(texts) if embed is not None else None
        scores = np.zeros(len(texts))
        splits = StratifiedKFold(n_splits=min(folds, len(mine), len(theirs)), shuffle=True, random_state=seed)
        for train, test in splits.split(texts, labels):
            seen = [texts[i] for i in train]
            vectorizer = cls._vectorizer().fit(seen)
            fitted = cls._features(vectorizer, seen, None if vectors is None else vectors[train])
            model = cls._classifier(seed).fit(fitted, labels[train])
            held = cls._features(vectorizer, [texts[i] for i in test], None if vectors is None else vectors[test])
            scores[test] = model.predict_proba(held)[:, 1]
        auc = float(roc_auc_score(labels, scores))
        vectorizer = cls._vectorizer().fit(texts)
        model = cls._classifier(seed).fit(cls._features(vectorizer, texts, vectors), labels)
        return cls(vectorizer, model, embed, auc, len(mine), len(theirs))

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """The probability that each text is the character speaking (an empty text scores like any other)."""
        texts = _clean(texts)
        if not texts:
            return np.zeros(0)
        vectors = self.embed(texts) if self.embed is not None else None
        return self.model.predict_proba(self._features(self.vectorizer, texts, vectors))[:, 1]

    def in_character(self, texts: Sequence[str]) -> np.ndarray:
        """Whether each text is judged the character's (probability at least :data:`IDENTITY_THRESHOLD`)."""
        return self.score(texts) >= IDENTITY_THRESHOLD
