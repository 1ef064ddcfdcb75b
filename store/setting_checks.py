"""How a settings model says what is wrong: one wording for the trainer's, the examples', the privacy and
the fidelity settings, whether they come from ``persona.yaml``, a flag or code.

A field's message is read from its type and bounds (``must be a positive integer, got 0``), so the
models stay the one place where a bound is written down.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BeforeValidator, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

__all__ = ["ConfigError", "Float", "Int", "TrainingError", "expectation", "field_kind", "problems"]


class TrainingError(Exception):
    """Training or publishing cannot go on; the message says why and what to do."""


class ConfigError(TrainingError, ValueError):
    """A setting is invalid; the message names where it came from and the field.

    ``problems`` holds ``(field, what is wrong)`` pairs when the settings model found them, so that a
    caller can name each field's source instead (``TrainConfig.from_overrides``).
    """

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []

    @classmethod
    def of(cls, problems: list[tuple[str, str]], label: Callable[[str], str] = str) -> ConfigError:
        return cls("; ".join(f"{label(name)}: {text}" for name, text in problems), problems)


def _no_bool(value: Any) -> Any:
    """YAML's ``true`` is not a number: refuse it where pydantic would read it as 1."""
    if isinstance(value, bool):
        raise PydanticCustomError("not_a_number", "booleans are not numbers")
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]


def field_kind(annotation: Any) -> tuple[Any, bool]:
    """(the plain type, whether null is allowed) of a field's annotation: ``(int, True)`` for ``Int | None``."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        annotation = next(a for a in args if a is not type(None))
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return typing.get_origin(annotation) or annotation, optional


def expectation(info: FieldInfo) -> str:
    """What a field accepts, in words, read from its type and bounds (``must be a positive integer``)."""
    kind, optional = field_kind(info.annotation)
    bounds = {
        type(m).__name__: getattr(m, type(m).__name__.lower()) for m in info.metadata if isinstance(m, (Ge, Gt, Le, Lt))
    }
    if kind is bool:
        text = "must be true or false"
    elif kind is tuple:
        text = "must be a list of module names"
    elif kind is int:
        low = bounds.get("Ge", 0)
        text = {1: "must be a positive integer", 0: "must be a whole number of at least 0"}.get(
            low, f"must be an integer of at least {low}"
        )
    else:
        text = "must be a number"
        if "Gt" in bounds or "Ge" in bounds:
            text += f" above {bounds['Gt']}" if "Gt" in bounds else f" at least {bounds['Ge']}"
        if "Lt" in bounds or "Le" in bounds:
            text += f" and below {bounds['Lt']}" if "Lt" in bounds else f" and at most {bounds['Le']}"
    return text + (" or null" if optional else "")


def problems(
    error: ValidationError, fields: Mapping[str, FieldInfo], unknown: str = "unknown setting"
) -> list[tuple[str, str]]:
    """``(field, what it must be, got what)`` for each invalid field of a flat settings model, in order.

    A custom error (``setting``) keeps its own words; a plain type or bound error is worded from the
    field's declaration by :func:`expectation`.
    """
    out: dict[str, str] = {}
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else "?"
        if name in out:
            continue  # a union reports each of its branches; one message per field is enough
        if item["type"] == "extra_forbidden":
            out[name] = unknown
        elif item["type"] == "setting" or name not in fields:
            out[name] = item["msg"]
        else:
            out[name] = f"{expectation(fields[name])}, got {item['input']!r}"
    return list(out.items())
