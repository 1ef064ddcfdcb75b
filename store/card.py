"""The persona card, ``persona.yaml``: who the character is and how to talk to it.

Every field is optional; a folder with only ``logs/`` is a valid persona whose character is the
speaker named like the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, NonNegativeInt, StringConstraints, ValidationError

from .errors import CardError
from .fidelity_settings import FidelitySettings
from .files import atomic_write
from .privacy_settings import PrivacySettings
from .train_settings import check_training

CARD_FILE = "persona.yaml"
PICTURE_NAMES = ("avatar.png", "avatar.jpg", "avatar.jpeg", "avatar.webp", "picture.png", "picture.jpg")


FALLBACK_TEMPERATURE = 1.0
"""Temperature when neither the request nor the card sets one (OpenAI's default)."""
FALLBACK_TOP_P = 1.0
"""Nucleus sampling when neither the request nor the card sets it (OpenAI's default)."""


TokenId = Annotated[str, StringConstraints(pattern=r"^[0-9]+$")]
"""A token id written as a string, as ``logit_bias`` keys are in OpenAI's API."""


class SamplingDefaults(BaseModel):
    """Sampling used when a request does not set its own; the server, the page and the fidelity
    report all read it through :meth:`effective_temperature` and :meth:`effective_top_p`."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    top_k: int | None = Field(default=None, ge=-1, description="The k likeliest tokens; 0 or -1: all.")
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    min_tokens: int | None = Field(default=None, ge=0)
    stop_token_ids: list[NonNegativeInt] | None = None
    logit_bias: dict[TokenId, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    """Token ids (as strings, as in a request) to a bias from -100 (never) to 100 (always)."""

    def effective_temperature(self) -> float:
        return FALLBACK_TEMPERATURE if self.temperature is None else self.temperature

    def effective_top_p(self) -> float:
        return FALLBACK_TOP_P if self.top_p is None else self.top_p


class ServingSettings(BaseModel):
    """How the server holds the persona's adapter: a pinned one stays loaded in the engine, so the
    few personas a site features never wait for a load after quieter ones were chatted with."""

    model_config = ConfigDict(extra="forbid")

    pinned: bool = False


class PersonaCard(BaseModel):
    """The validated contents of ``persona.yaml``."""

    model_config = ConfigDict(extra="forbid")

    display_name: str | None = None
    description: str = ""
    speakers: list[str] = Field(default_factory=list)
    system_prompt: str | None = None
    greeting: str | None = None
    example_questions: list[str] = Field(default_factory=list)
    voice_markers: list[str] = Field(default_factory=list)
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    picture: str | None = None
    training: Annotated[dict[str, Any], BeforeValidator(check_training)] = Field(default_factory=dict)
    """Overrides of the training settings (:class:`store.train_settings.TrainConfig`) and of how logs
    become examples (:class:`store.example_settings.ExampleSettings`), as written; checked when the
    card is read, so a typo is refused before any run starts."""
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    """Private details in the logs: ``enabled`` (default true), ``allow`` (strings kept as they are),
    ``phone_regions``, ``kinds``."""
    fidelity: FidelitySettings = Field(default_factory=FidelitySettings)
    """How versions are evaluated and gated (probe counts, reply length, the gate's tolerances)."""
    serving: ServingSettings = Field(default_factory=ServingSettings)
    """How the server holds the live adapter: ``pinned`` keeps it loaded in the engine."""

    def title(self, name: str) -> str:
        return self.display_name or name.replace("-", " ").replace("_", " ").title()

    def effective_system_prompt(self, name: str) -> str:
        """The short system prompt added to requests that carry none."""
        if self.system_prompt:
            return self.system_prompt.strip()
        text = f"You are {self.title(name)}."
        if self.description:
            text += " " + self.description.strip()
        return text


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def card_problems(error: ValidationError) -> str:
    """Every invalid field of a card, ``field 'training.learnig_rate': unknown setting; ...``."""
    return "; ".join(
        f"field '{_field_path(err['loc'])}': "
        + ("unknown setting" if err["type"] == "extra_forbidden" and len(err["loc"]) > 1 else err["msg"])
        for err in error.errors()
    )


def load_card(folder: Path) -> PersonaCard:
    """Read ``folder/persona.yaml``; a missing file gives the defaults.

    Raises :class:`CardError` naming the file and every offending field.
    """
    path = folder / CARD_FILE
    if not path.exists():
        return PersonaCard()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CardError(f"{path}: cannot be read as YAML: {exc}") from exc
    if raw is None:
        return PersonaCard()
    if not isinstance(raw, dict):
        raise CardError(f"{path}: expected a mapping of fields, got {type(raw).__name__}")
    try:
        card = PersonaCard.model_validate(raw)
    except ValidationError as exc:
        raise CardError(f"{path}: {card_problems(exc)}") from exc
    if card.picture and (Path(card.picture).name != card.picture or not (folder / card.picture).is_file()):
        raise CardError(f"{path}: field 'picture': {card.picture!r} is not a file in {folder}")
    return card


def find_picture(folder: Path, card: PersonaCard) -> Path | None:
    """The persona's picture: the card's ``picture`` or a conventionally named file."""
    if card.picture:
        return folder / card.picture
    for candidate in PICTURE_NAMES:
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def write_card(folder: Path, card: PersonaCard) -> Path:
    """Write ``persona.yaml`` atomically (importing a character card, an upload).

    The card is validated again first (``model_copy`` skips validation), so no file is written that
    :func:`load_card` would refuse."""
    path = folder / CARD_FILE
    data = card.model_dump(mode="json", exclude_defaults=True)
    try:
        PersonaCard.model_validate(data)
    except ValidationError as exc:
        raise CardError(f"{path}: {card_problems(exc)}") from exc
    atomic_write(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path
