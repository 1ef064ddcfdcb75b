"""Adapter versions of one persona: ``adapters/vN/`` folders, their metadata and the live pointer.

A version folder is written once and never edited. Publishing renames a fully written staging folder
to ``vN`` and then swaps the ``LIVE`` pointer file by rename, so a reader sees either the old live
version or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import StoreError, VersionNotFound
from .files import atomic_write
from .names import check_version, parse_version, version_name

ADAPTERS_DIR = "adapters"
LIVE_FILE = "LIVE"
PIN_FILE = "PINNED"
METADATA_FILE = "metadata.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
STAGING_PREFIX = ".staging-"
SERVABLE_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Modules an adapter may target: the linear layers of a Llama-style block, which vLLM adapts.
Training defaults to all of them and refuses any other, so a run never ends in an unservable adapter."""
STORED_DTYPE = "bfloat16"
"""What float32 adapter weights are written in: what the server's engine keeps adapters in (bfloat16
models on GPUs, the CPU LoRA kernel's cache), so a load reads half of float32's bytes and converts
nothing, with float32's range, so the small weights of a lightly trained adapter keep their magnitude."""


class LoraShape(BaseModel):
    """What the server needs to know to load an adapter within its LoRA limits."""

    r: int
    alpha: float
    target_modules: list[str]


class ExampleCounts(BaseModel):
    """Training examples of a version by origin: the persona's logs, accepted generated examples
    (trained at ``synthetic_weight``) and general conversation mixed in against forgetting."""

    real: int = 0
    """The character's replies from the logs (a whole session trained as one row holds several)."""
    synthetic: int = 0
    replay: int = 0


class AdapterMetadata(BaseModel):
    """``metadata.json`` of a version: where it came from and how good it is."""

    model_config = ConfigDict(extra="allow")

    base_model: str
    base_hash: str
    data_hash: str = ""
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    lora: LoraShape | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    train_loss: float | None = None
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None
    tokens: dict[str, int] = Field(default_factory=dict)
    examples: ExampleCounts | None = None
    """Training examples by origin (absent in versions trained before they were counted)."""
    duration_s: float | None = None


def adapters_root(persona_path: Path) -> Path:
    return persona_path / ADAPTERS_DIR


def list_versions(persona_path: Path) -> list[int]:
    """Complete version numbers, ascending (staging folders and strays are ignored)."""
    root = adapters_root(persona_path)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        number = parse_version(child.name)
        if number is not None and (child / METADATA_FILE).is_file():
            found.append(number)
    return sorted(found)


def version_dir(persona_path: Path, version: int | str) -> Path:
    number = check_version(version) if isinstance(version, str) else version
    path = adapters_root(persona_path) / version_name(number)
    if not (path / METADATA_FILE).is_file():
        raise VersionNotFound(f"persona '{persona_path.name}' has no adapter version v{number}")
    return path


def read_live(persona_path: Path) -> int | None:
    """The live version number, or ``None`` when nothing was published (or the pointer is stale)."""
    pointer = adapters_root(persona_path) / LIVE_FILE
    try:
        text = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    try:
        number = check_version(text)
    except StoreError:
        return None
    return number if (adapters_root(persona_path) / text / METADATA_FILE).is_file() else None


def set_live(persona_path: Path, version: int) -> None:
    """Make ``version`` the live one (publishing and rollback both come here)."""
    version_dir(persona_path, version)
    atomic_write(adapters_root(persona_path) / LIVE_FILE, version_name(version) + "\n")


def restore_live(persona_path: Path, version: int | None) -> None:
    """Put back the live version as it was before a publish: ``version``, or none (the card alone)."""
    if version is not None:
        set_live(persona_path, version)
    else:
        (adapters_root(persona_path) / LIVE_FILE).unlink(missing_ok=True)


def rollback(persona_path: Path, to: int | None = None) -> int:
    """Make ``to`` live, or by default the newest version older than the live one; returns it."""
    versions = list_versions(persona_path)
    if to is None:
        live = read_live(persona_path)
        older = [v for v in versions if live is not None and v < live]
        if not older:
            raise StoreError(f"persona '{persona_path.name}' has no version older than the live one to roll back to")
        to = older[-1]
    set_live(persona_path, to)
    if is_pinned(persona_path):
        set_pinned(persona_path, True)  # the pin follows the version a person chose
    return to


def set_pinned(persona_path: Path, pinned: bool) -> None:
    """Pin the live version (automatic retraining then leaves it live) or unpin it."""
    marker = adapters_root(persona_path) / PIN_FILE
    if pinned:
        live = read_live(persona_path)
        if live is None:
            raise StoreError(f"persona '{persona_path.name}' has no live version to pin")
        atomic_write(marker, version_name(live) + "\n")
    else:
        marker.unlink(missing_ok=True)


def is_pinned(persona_path: Path) -> bool:
    return (adapters_root(persona_path) / PIN_FILE).is_file()


PinEffect = Literal["make live", "skip", "publish beside"]


def pin_effect(persona_path: Path, automatic: bool) -> PinEffect:
    """What a new training run may do to the live version: the pin's one rule.

    An unpinned persona: the new version may go live (if the gate lets it). A pinned one: an automatic
    run (the watcher's) is skipped; a run someone started is published beside the pinned version.
    """
    if not is_pinned(persona_path):
        return "make live"
    return "skip" if automatic else "publish beside"


def read_metadata(path: Path) -> AdapterMetadata:
    meta_path = path / METADATA_FILE
    try:
        return AdapterMetadata.model_validate_json(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"{meta_path}: cannot be read: {exc}") from exc


def read_lora_shape(path: Path) -> LoraShape:
    """Rank, alpha and target modules from a PEFT ``adapter_config.json``."""
    config_path = path / ADAPTER_CONFIG
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"{config_path}: cannot be read: {exc}") from exc
    targets = config.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    return LoraShape(
        r=int(config.get("r", 0)), alpha=float(config.get("lora_alpha", 0)), target_modules=sorted(targets)
    )


def check_servable(path: Path, max_lora_rank: int, allowed_modules: set[str] | None = None) -> LoraShape:
    """Refuse an adapter the server could not load: too high a rank, unknown modules, extra weights."""
    config_path = path / ADAPTER_CONFIG
    if not (path / ADAPTER_WEIGHTS).is_file():
        raise StoreError(f"{path}: no {ADAPTER_WEIGHTS}")
    shape = read_lora_shape(path)
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        raise StoreError(f"{config_path}: field 'peft_type' is {config.get('peft_type')!r}; only LORA is served")
    if not 1 <= shape.r <= max_lora_rank:
        raise StoreError(f"{config_path}: field 'r' is {shape.r}; the server allows ranks 1 to {max_lora_rank}")
    if config.get("modules_to_save"):
        raise StoreError(
            f"{config_path}: field 'modules_to_save' must be empty for serving, got {config['modules_to_save']}"
        )
    if allowed_modules is not None:
        unknown = sorted(set(shape.target_modules) - allowed_modules)
        if unknown:
            raise StoreError(f"{config_path}: field 'target_modules' has modules the server cannot adapt: {unknown}")
    return shape


def as_stored(weight: Any) -> Any:
    """A tensor of adapter weights as a version keeps it: float32 in :data:`STORED_DTYPE`, others as they are."""
    import torch

    return weight.to(getattr(torch, STORED_DTYPE)) if weight.dtype == torch.float32 else weight


def store_weights(staged: Path) -> None:
    """Rewrite a staged adapter's weights file as a version keeps it (:func:`as_stored`); the new file
    replaces the old by rename, never written over the one its tensors were read from."""
    from safetensors.torch import load_file, save_file

    path = staged / ADAPTER_WEIGHTS
    weights = load_file(path)
    stored = {name: as_stored(weight) for name, weight in weights.items()}
    if any(stored[name] is not weights[name] for name in weights):
        written = path.with_name(path.name + ".stored")
        save_file(stored, str(written), metadata={"format": "pt"})
        os.replace(written, path)


def new_staging_dir(persona_path: Path) -> Path:
    """An empty folder beside the versions, to write a new version into before publishing."""
    root = adapters_root(persona_path)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))


def publish(persona_path: Path, staged: Path, make_live: bool = True) -> int:
    """Turn a fully written staging folder into the next version and (by default) make it live.

    The rename is atomic; if another publisher took the number first, the next one is tried.
    """
    if not (staged / METADATA_FILE).is_file():
        raise StoreError(f"{staged}: no {METADATA_FILE}; refusing to publish an incomplete adapter")
    root = adapters_root(persona_path)
    while True:
        existing = [parse_version(p.name) for p in root.iterdir()]
        number = max((n for n in existing if n is not None), default=0) + 1
        try:
            os.rename(staged, root / version_name(number))
            break
        except OSError:
            if not (root / version_name(number)).exists():
                raise
    if make_live:
        set_live(persona_path, number)
    return number


def adapter_fingerprint(path: Path) -> str:
    """Changes whenever the weights file changes; the server keys its LoRA ids on it."""
    stat = (path / ADAPTER_WEIGHTS).stat()
    return f"{stat.st_ino}-{stat.st_size}-{stat.st_mtime_ns}"
