"""How a version is evaluated and what the gate tolerates: the ``fidelity:`` section of ``persona.yaml``.

Every field has a default sized so that a report takes a minute or two on two CPU cores::

    fidelity:
      heldout_prompts: 20      # held-out prompts that get a generated reply from each system
      sessions: 4              # fresh sessions each probe question is asked in
      probes: 5                # probe questions (the card's example_questions, else held-out prompts)
      max_tokens: 64           # reply length for the report
      gate:
        max_perplexity_increase: 0.02   # new may be at most 2% above the live version
        max_similarity_drop: 0.05       # centroid similarity may drop by at most 0.05

:meth:`FidelitySettings.from_card` raises :class:`FidelityError` naming the file and the field; the card
validates the section when it is read (``store.card``), so a card that loads has valid settings.
The section lives in the store for that reason; the evaluation is ``training/fidelity``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["FidelityError", "FidelitySettings", "GateThresholds"]


class FidelityError(ValueError):
    """A version cannot be evaluated (bad settings, no held-out data, no server); the message says why."""


class GateThresholds(BaseModel):
    """How much worse than the live version a new version may be and still go live.

    Perplexity is measured on the same real replies every time, so its tolerance can be small. The
    style figures come from a few sampled replies and move between two evaluations of equally good
    versions, so their tolerance is wider.
    """

    model_config = ConfigDict(extra="forbid")

    max_perplexity_increase: float = Field(default=0.02, ge=0.0)
    """Relative: held-out perplexity of the adapter may be at most this much above the live one's."""
    max_similarity_drop: float = Field(default=0.05, ge=0.0)
    """Absolute: style similarity to the real replies' centroid may drop by at most this much."""
    max_forgetting: float | None = Field(default=None, ge=0.0)
    """Relative: perplexity on general conversation may rise at most this much above the base model's;
    off unless set."""
    max_identity_drop: float = Field(default=0.05, ge=0.0)
    """Absolute: the adapter's mean identity through the held-out conversations (turn by turn) may drop
    by at most this much below the live version's."""
    live_on_perplexity: bool = True
    """With a server to evaluate through (the living service): a new version goes live as soon as its
    held-out perplexity passes against the live version's, measured in seconds in the training process
    (a first version, with nothing to compare with, at once), so the user talks to it
    while the rest of the report is measured; if the whole report then holds it back, the version live
    before is live again. Off: the version waits for the whole report."""


class FidelitySettings(BaseModel):
    """What a fidelity report measures and how much it generates."""

    model_config = ConfigDict(extra="forbid")

    heldout_prompts: int = Field(default=20, ge=2)
    """Held-out prompts each system answers (the style figures compare these replies with the real ones)."""
    sessions: int = Field(default=4, ge=2)
    """Fresh sessions each probe question is asked in (consistency across sessions)."""
    probes: int = Field(default=5, ge=1)
    """Probe questions: the card's ``example_questions`` first, then held-out prompts."""
    max_tokens: int = Field(default=64, ge=1)
    """Most tokens per generated reply."""
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    """Sampling temperature; when not set, what the server uses: the card's ``sampling.temperature``,
    else :data:`store.card.FALLBACK_TEMPERATURE`."""
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    """Nucleus sampling; when not set, the card's ``sampling.top_p``, else :data:`store.card.FALLBACK_TOP_P`."""
    example_exchanges: int = Field(default=4, ge=0)
    """Exchanges from the training logs written into the full card of the prompt-only persona."""
    perplexity_examples: int = Field(default=64, ge=1)
    """Most held-out examples scored for perplexity (spread evenly over the held-out split)."""
    max_length: int = Field(default=1024, ge=64)
    """Tokens per scored conversation; older context turns are dropped first."""
    batch_size: int = Field(default=8, ge=1)
    """Conversations per forward pass when scoring perplexity."""
    concurrency: int = Field(default=24, ge=1)
    """Requests in flight at once, so the engine batches them."""
    seed: int = 0
    dialogue_turns: int = Field(default=6, ge=0)
    """Turns each system talks through a held-out conversation for the identity figures (0: none)."""
    dialogue_sessions: int = Field(default=4, ge=1)
    """Held-out conversations talked through (the longest first)."""
    identity_lines: int = Field(default=300, ge=8)
    """Most lines on each side (the character's training replies; the other speakers' lines and the base
    model's answers) that the identity scorer is trained on."""
    generic_answers: int = Field(default=32, ge=0)
    """The base model's answers to training user turns, generated once per report as the generic
    assistant's voice the identity scorer learns to tell apart."""
    gate: GateThresholds = Field(default_factory=GateThresholds)

    @classmethod
    def from_card(
        cls, section: FidelitySettings | Mapping[str, Any] | None, card_path: Path | str = "persona.yaml"
    ) -> FidelitySettings:
        """Settings from a card's ``fidelity:`` value (a mapping, or the card's already validated settings);
        a bad value names the file and the field."""
        if isinstance(section, FidelitySettings):
            return section
        try:
            return cls.model_validate(dict(section or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"field 'fidelity.{'.'.join(str(p) for p in err['loc'])}': {err['msg']}" for err in exc.errors()
            )
            raise FidelityError(f"{card_path}: {problems}") from exc
