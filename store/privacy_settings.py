"""The ``privacy:`` section of ``persona.yaml``: which private details become placeholders before training.

The detection itself is the training side's (``training/ingest/privacy.py``); the settings live here so
the card validates them when it is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictBool, StrictStr
from pydantic_core import PydanticCustomError

__all__ = ["KINDS", "Kind", "PrivacySettings"]

Kind = Literal["phone", "email", "card", "iban", "address", "url_token"]
KINDS: tuple[Kind, ...] = ("phone", "email", "card", "iban", "address", "url_token")
"""Every kind of private detail that is found, in the order they are documented."""


def _a_list(value: Any) -> Any:
    """A YAML list (a lone string is not a list of one: ``allow: x`` is refused, not read as ``[x]``)."""
    if not isinstance(value, (list, tuple)):
        raise PydanticCustomError("setting", "must be a list of strings")
    return value


Strings = Annotated[tuple[StrictStr, ...], BeforeValidator(_a_list)]


class PrivacySettings(BaseModel):
    """How the examples of a persona are cleaned (``persona.yaml``: ``privacy:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    enabled: StrictBool = True
    """Replace private details with placeholders before training (on by default)."""
    allow: Strings = ()
    """Exact strings that are kept as they are (a shop's public phone number, the character's own
    e-mail address in its catchphrase)."""
    phone_regions: Strings = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "CA", "AU", "IN")
    """Regions whose national phone number formats are recognised (``+`` numbers always are)."""
    kinds: Annotated[tuple[Kind, ...], BeforeValidator(_a_list)] = KINDS
    """Which kinds of detail are replaced."""

    @classmethod
    def of(cls, section: PrivacySettings | Mapping[str, Any] | None) -> PrivacySettings:
        """The settings of a card's ``privacy:`` value (already validated when it came from a card)."""
        if isinstance(section, PrivacySettings):
            return section
        return cls.model_validate(dict(section or {}))
