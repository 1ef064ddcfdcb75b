"""Persona and version names, and the only way to turn them into paths.

A name comes from a URL, a request body or a folder listing; checking it against a strict pattern
before it touches the filesystem is what keeps ``../`` and friends out of the store.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import InvalidName

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
VERSION_PATTERN = re.compile(r"v([1-9][0-9]{0,8})")


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid persona name, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidName(
            f"invalid persona name {name!r}: use 1-64 characters of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def version_name(number: int) -> str:
    """The name of version ``number``: ``v3``."""
    return f"v{number}"


def parse_version(text: str) -> int | None:
    """``N`` for a well-formed ``vN``, else ``None`` (for listings, where strays are skipped)."""
    match = VERSION_PATTERN.fullmatch(text) if isinstance(text, str) else None
    return int(match.group(1)) if match else None


def check_version(version: str) -> int:
    """Parse ``vN`` into ``N``; anything else raises :class:`InvalidName`."""
    number = parse_version(version)
    if number is None:
        raise InvalidName(f"invalid adapter version {version!r}: versions are written v1, v2, ...")
    return number


def persona_dir(root: Path, name: str) -> Path:
    """The folder of persona ``name`` under ``root``, refusing anything that escapes it."""
    path = (root / check_name(name)).resolve()
    if path.parent != root.resolve():
        raise InvalidName(f"persona name {name!r} resolves outside {root}")
    return path
