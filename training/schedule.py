"""The learning-rate schedule of a training run: a factor of the peak rate for each step."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["lr_factor"]


def lr_factor(total_steps: int | None, warmup: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to ``min_ratio`` of the peak over ``total_steps``.

    ``total_steps=None`` (the run's length is chosen by learning) keeps the peak after warm-up: a decay
    planned over a guessed length either reaches its floor while the held-out loss still falls or
    hardly decays at all, and a constant rate lets every pass learn as much as the first while early
    stopping, which keeps the best adapter, decides when more passes stop helping. It stays a function
    of the step alone, so a resumed run follows the same schedule.
    """

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if total_steps is None:
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor
