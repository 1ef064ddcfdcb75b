"""What every subcommand shares: settings from flags, and failing with one clear line."""

from __future__ import annotations

from typing import Any, NoReturn

import typer


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
            problems.append(f"--{field.replace('_', '-')} / PERSONA_{field.upper()}: {item['msg']}, got {item['input']!r}")
        fail("; ".join(problems))


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)
