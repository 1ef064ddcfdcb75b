"""Growing a thin persona: generated examples in its voice, checked by rules, reviewed by a person."""

from .filters import Candidate, Rules
from .generate import AugmentReport, augment

__all__ = ["AugmentReport", "Candidate", "Rules", "augment"]
