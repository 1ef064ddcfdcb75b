"""Discovering personas in the personas folder.

The store is read afresh on every call: folders are small, and reading them again is what lets a
persona dropped in (or retrained) while the server runs appear without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .adapters import (
    AdapterMetadata,
    list_versions,
    read_live,
    read_metadata,
    version_dir,
)
from .card import PersonaCard, find_picture, load_card
from .errors import BaseModelMismatch, InvalidName, PersonaNotFound, StoreError
from .names import NAME_PATTERN, check_name, persona_dir

LOGS_DIR = "logs"
VALIDATION_DIR = "validation"
"""Held-out logs (the fine-tuning API's ``validation_file``): evaluated on instead of a split of ``logs/``."""
REMOVED_DIR = ".removed"


@dataclass(frozen=True)
class Persona:
    """One persona folder as read at one moment."""

    name: str
    path: Path
    card: PersonaCard
    versions: list[int] = field(default_factory=list)
    live: int | None = None

    @property
    def logs_dir(self) -> Path:
        return self.path / LOGS_DIR

    @property
    def title(self) -> str:
        return self.card.title(self.name)

    @property
    def system_prompt(self) -> str:
        return self.card.effective_system_prompt(self.name)

    @property
    def picture(self) -> Path | None:
        return find_picture(self.path, self.card)

    def version_path(self, version: int) -> Path:
        return version_dir(self.path, version)

    def metadata(self, version: int) -> AdapterMetadata:
        return read_metadata(self.version_path(version))


class PersonaStore:
    """The personas folder: ``<root>/<name>/{persona.yaml, logs/, adapters/}``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        """Folder names that are valid persona names (others are ignored, never followed)."""
        if not self.root.is_dir():
            return []
        return sorted(
            child.name
            for child in self.root.iterdir()
            if child.is_dir() and NAME_PATTERN.fullmatch(child.name) and not child.is_symlink()
        )

    def get(self, name: str) -> Persona:
        """Read one persona; raises :class:`InvalidName`, :class:`PersonaNotFound` or :class:`CardError`."""
        path = persona_dir(self.root, check_name(name))
        if not path.is_dir():
            raise PersonaNotFound(f"no persona named '{name}' in {self.root}")
        return Persona(
            name=name,
            path=path,
            card=load_card(path),
            versions=list_versions(path),
            live=read_live(path),
        )

    def scan(self) -> tuple[list[Persona], dict[str, str]]:
        """Every readable persona, and for each unreadable one the reason (one bad card hides no other)."""
        found: list[Persona] = []
        problems: dict[str, str] = {}
        for name in self.names():
            try:
                found.append(self.get(name))
            except StoreError as exc:
                problems[name] = str(exc)
        return found, problems

    def remove(self, name: str) -> Path:
        """Take a persona out of service: its folder moves to ``.removed/`` (nothing is deleted).

        New requests for it get a 404 at once; requests already running finish on the adapter the
        engine has loaded."""
        import time

        persona = self.get(name)
        trash = self.root / REMOVED_DIR
        trash.mkdir(exist_ok=True)
        target = trash / f"{persona.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        persona.path.rename(target)
        return target

    def create(self, name: str) -> Persona:
        """Make an empty persona folder with a ``logs/`` folder."""
        path = persona_dir(self.root, check_name(name))
        (path / LOGS_DIR).mkdir(parents=True, exist_ok=True)
        return self.get(name)


def check_same_base(metadata: AdapterMetadata, base_hash: str, base_id: str, where: Path) -> None:
    """Refuse to serve or continue an adapter trained on another base model."""
    if metadata.base_hash != base_hash:
        raise BaseModelMismatch(
            f"{where}: adapter was trained on base model '{metadata.base_model}' "
            f"(hash {metadata.base_hash[:12]}), but the base model is '{base_id}' (hash {base_hash[:12]}); "
            "retrain it on this base or serve its own base"
        )


__all__ = ["Persona", "PersonaStore", "check_same_base", "InvalidName", "PersonaNotFound", "LOGS_DIR", "VALIDATION_DIR"]
