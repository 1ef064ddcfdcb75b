"""From the request's ``model`` to what to run: base model, persona card, and which adapter.

``"<name>"`` is the persona's live version, ``"<name>@vN"`` a given version, the base model's id
no adapter. The store is read on each call, so new personas and new versions need no restart.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from pathlib import Path

from store.adapters import SERVABLE_MODULES, adapter_fingerprint, check_servable, read_metadata
from store.base_model import BaseModel
from store.card import PersonaCard, SamplingDefaults
from store.errors import CardError, StoreError
from store.jobs import JobStore
from store.names import check_version, version_name
from store.registry import Persona, PersonaStore, check_same_base

from .engine import AdapterRef
from .errors import APIError, model_not_found, store_error
from .fine_tuning.names import resolve_fine_tuned


@dataclass(frozen=True)
class Target:
    """What one request runs on."""

    model: str
    persona: Persona | None
    version: int | None
    adapter: AdapterRef | None

    @property
    def system_prompt(self) -> str | None:
        return self.persona.system_prompt if self.persona else None

    @property
    def sampling(self) -> SamplingDefaults:
        return self.persona.card.sampling if self.persona else PersonaCard().sampling

    @property
    def version_label(self) -> str:
        if self.persona is None:
            return "base"
        return version_name(self.version) if self.version else "card"


class LoraIds:
    """Hands out LoRA ids: one per adapter weights, never reused in the server's life (vLLM caches by id)."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, int, str], int] = {}
        self._next = itertools.count(1)
        self._lock = threading.Lock()

    def get(self, name: str, version: int, fingerprint: str) -> int:
        key = (name, version, fingerprint)
        with self._lock:
            if key not in self._ids:
                self._ids[key] = next(self._next)
            return self._ids[key]


class ModelResolver:
    def __init__(self, store: PersonaStore, base: BaseModel, max_lora_rank: int) -> None:
        self.store = store
        self.base = base
        self.max_lora_rank = max_lora_rank
        self.lora_ids = LoraIds()
        self._checked: dict[tuple[Path, str], None] = {}

    def base_names(self) -> set[str]:
        return {self.base.id, str(self.base.path)}

    def resolve(self, model: str) -> Target:
        """Raise a 404 in OpenAI's shape for anything that is not a served model (a persona whose card
        does not validate is the 409 naming the file and field)."""
        if model in self.base_names():
            return Target(model=model, persona=None, version=None, adapter=None)
        if model.startswith("ft:"):
            # A fine-tuning job's model name always serves the version that job published.
            pinned = resolve_fine_tuned(model, JobStore(self.store.root))
            if pinned is None:
                raise model_not_found(model, "no succeeded fine-tuning job has this model name")
            target = self.resolve(pinned)
            return Target(model=model, persona=target.persona, version=target.version, adapter=target.adapter)
        name, at, version_text = model.partition("@")
        try:
            persona = self.store.get(name)
        except CardError as exc:
            raise store_error(exc, "model") from exc
        except StoreError as exc:
            raise model_not_found(model) from exc
        if at:
            try:
                version = check_version(version_text)
            except StoreError as exc:
                raise model_not_found(model, str(exc)) from exc
            if version not in persona.versions:
                available = ", ".join(version_name(v) for v in persona.versions) or "none"
                raise model_not_found(
                    model, f"persona '{name}' has no version {version_text!r} (versions: {available})"
                )
        else:
            version = persona.live
        if version is None:
            return Target(model=model, persona=persona, version=None, adapter=None)
        return Target(model=model, persona=persona, version=version, adapter=self._adapter(persona, version))

    def _adapter(self, persona: Persona, version: int) -> AdapterRef:
        path = persona.version_path(version)
        fingerprint = adapter_fingerprint(path)
        if (path, fingerprint) not in self._checked:
            try:
                check_same_base(read_metadata(path), self.base.hash, self.base.id, path)
                check_servable(path, self.max_lora_rank, set(SERVABLE_MODULES))
            except StoreError as exc:
                raise APIError(409, str(exc), "invalid_request_error", "model", "adapter_not_servable") from exc
            self._checked[(path, fingerprint)] = None
        lora_id = self.lora_ids.get(persona.name, version, fingerprint)
        return AdapterRef(lora_id=lora_id, name=f"{persona.name}@{version_name(version)}#{lora_id}", path=path)
