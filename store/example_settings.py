"""How logs become examples: the example-shaping keys of ``persona.yaml``'s ``training:`` section.

They live beside the trainer's settings in the card (``training: {window: 4, lora_r: 8}``) but are read
by the example builder, not the trainer; :func:`store.train_settings.check_training` validates both when
the card is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import ConfigDict, Field, StrictBool, TypeAdapter, ValidationError, field_validator
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from .setting_checks import ConfigError, Float, Int, problems

__all__ = ["ExampleSettings"]

_HOURS = TypeAdapter(Float)


@dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))
class ExampleSettings:
    """How logs become examples. Every field has a default that suits a persona of a few hundred lines.

    A pydantic dataclass: constructing one validates it (a ``ValueError`` naming the field), and
    ``dataclasses.replace`` gives a validated copy.
    """

    window: Int = Field(6, ge=1)
    """Most prior messages (after merging) an example carries before its target."""
    session_gap: timedelta = timedelta(hours=6)
    """A longer silence between two timestamped messages starts a new session (``session_gap_hours``
    in the card)."""
    heldout_fraction: Float = Field(0.1, ge=0, lt=1)
    """Share of sessions kept out of training for evaluation (at least one when there are 3 or more)."""
    min_examples: Int = Field(20, ge=0)
    """Fewer training examples than this is an error: too little to learn a voice from."""
    name_prefixes: StrictBool = True
    """In a session with several other speakers, start their messages with ``Name: ``."""

    @field_validator("session_gap")
    @classmethod
    def _positive(cls, gap: timedelta) -> timedelta:
        if gap <= timedelta(0):
            raise PydanticCustomError("setting", "must be a positive duration, got {gap}", {"gap": str(gap)})
        return gap

    @classmethod
    def card_keys(cls) -> frozenset[str]:
        """The ``training:`` keys these settings are read from (``session_gap`` is given in hours)."""
        return frozenset("session_gap_hours" if name == "session_gap" else name for name in cls.__pydantic_fields__)

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any]) -> ExampleSettings:
        """Settings from a card's ``training:`` mapping.

        Reads only :meth:`card_keys`; other keys belong to the trainer. Raises :class:`ConfigError` (a
        ``ValueError``) naming each bad key: ``session_gap_hours: must be a number above 0, got 0``.
        """
        values = {key: overrides[key] for key in cls.card_keys() & set(overrides)}
        found: list[tuple[str, str]] = []
        if "session_gap_hours" in values:
            hours = values.pop("session_gap_hours")
            try:
                checked = _HOURS.validate_python(hours)
            except ValidationError:
                checked = None
            if checked is None or checked <= 0:
                found.append(("session_gap_hours", f"must be a number above 0, got {hours!r}"))
            else:
                values["session_gap"] = timedelta(hours=checked)
        try:
            settings = cls(**values)
        except ValidationError as error:
            found += problems(error, cls.__pydantic_fields__)
        if found:
            raise ConfigError.of(found)
        return settings
