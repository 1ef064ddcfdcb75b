"""What every subcommand shares: settings from flags, and failing with one clear line."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, NoReturn, Optional, TypeVar

import typer

Command = TypeVar("Command", bound=Callable[..., Any])


def given(**values: Any) -> dict[str, Any]:
    """Only the flags the user set, so environment variables and defaults fill the rest."""
    return {key: value for key, value in values.items() if value is not None}


def build_settings(cls: type, **flags: Any) -> Any:
    """Build a settings object from the flags given (environment and defaults fill the rest); a bad
    value ends the command with a message naming the flag and its environment variable."""
    from pydantic import ValidationError

    try:
        return cls(**given(**flags))
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else "?"
            problems.append(f"{flag_name(field)} / {env_name(cls, field)}: {item['msg']}, got {item['input']!r}")
        fail("; ".join(problems))


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def env_name(cls: type, field: str) -> str:
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def _shown_default(field: Any) -> str:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, bool):
        return "on" if value else "off"
    if value in (None, [], ""):
        return "none"
    return str(value)


def _flag_type(annotation: Any) -> tuple[Any, str]:
    """The flag's type for typer, and the choices to name in its help (pydantic checks the value)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return str, ", ".join(str(a) for a in args)
    if origin is list:
        return list[args[0] if args else str], ""
    if origin is not None and len(args) == 1:  # Optional[X]
        return _flag_type(args[0])
    return (annotation if isinstance(annotation, type) else str), ""


def settings_flag(cls: type, name: str) -> inspect.Parameter:
    """The option for one settings field: ``--max-loras``, its description, environment variable and default."""
    field = cls.model_fields[name]
    kind, choices = _flag_type(field.annotation)
    help_text = (field.description or "").rstrip(".")
    if choices:
        help_text += f" ({choices})"
    help_text += f". Env {env_name(cls, name)}; default {_shown_default(field)}."
    flag = flag_name(name)
    declarations = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
    option = typer.Option(None, *declarations, help=help_text, show_default=False)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind])


def settings_flags(cls: type, skip: tuple[str, ...] = ()) -> Callable[[Command], Command]:
    """Give a command one flag per field of the settings model ``cls`` (bar ``skip``), passed to it as
    keyword arguments: a setting added to the model is a flag, documented by its description."""

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        flags = [settings_flag(cls, name) for name in cls.model_fields if name not in skip]
        command.__signature__ = signature.replace(parameters=own + flags)  # type: ignore[attr-defined]
        return command

    return decorate


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)
