"""Training one persona end to end: logs -> examples -> LoRA -> published version.

    from training.run import train_persona, needs_training
    result = train_persona(store_settings, "wren", TrainConfig.from_overrides(card.training, flags),
                           max_lora_rank=16)
    print(result.version, result.eval_loss_before, result.eval_loss_after)

The run's work folder is ``personas/<name>/adapters/.work/`` (ignored by the version listing): the
resumable checkpoint, a lock that keeps two runs of one persona apart, and ``progress.json``
(:mod:`store.progress`) that the server shows as training progress. The checkpoint is removed once the
version is published.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from store.base_model import resolve_base_model
from store.progress import TrainingProgress, work_dir, write_progress
from store.registry import Persona, PersonaStore
from store.settings import StoreSettings

from .config import ConfigError, TrainConfig, TrainingError

__all__ = ["TrainResult", "train_persona", "needs_training", "data_hash", "config_for"]


@dataclass
class TrainResult:
    """What one training run produced."""

    name: str
    version: int
    path: Path
    data_hash: str
    train_loss: float | None
    eval_loss_before: float | None
    eval_loss_after: float | None
    steps: int
    epochs: int
    stopped_early: bool
    tokens_per_s: float
    duration_s: float
    tokens: dict[str, int] = field(default_factory=dict)
    resumed_from: int | None = None
    truncated_examples: int = 0


def _persona(store_settings: StoreSettings, persona: Persona | str) -> Persona:
    if isinstance(persona, Persona):
        return persona
    return PersonaStore(store_settings.personas_dir).get(persona)


def config_for(persona: Persona, flags: dict[str, Any] | None = None) -> TrainConfig:
    """The effective settings of a persona: defaults, its card's ``training:``, then ``flags``."""
    return TrainConfig.from_overrides(persona.card.training, flags or {},
                                      card_label=str(persona.path / "persona.yaml"))


def _examples(persona: Persona):
    from training.ingest import ExampleSettings, build_examples, load_logs

    try:
        settings = ExampleSettings.from_overrides(persona.card.training)
    except ValueError as exc:
        raise ConfigError(f"{persona.path / 'persona.yaml'}: training: {exc}") from exc
    if not persona.logs_dir.is_dir():
        raise TrainingError(f"persona '{persona.name}' has no logs folder ({persona.logs_dir}); add chat logs there")
    return build_examples(load_logs(persona.logs_dir), persona.name, persona.card, settings)


def data_hash(store_settings: StoreSettings, persona: Persona | str) -> str:
    """The data hash the persona's current logs give (as recorded in an adapter's metadata)."""
    return _examples(_persona(store_settings, persona)).data_hash


def needs_training(store_settings: StoreSettings, persona: Persona | str) -> bool:
    """True when the persona has no live version, or its logs changed since the live one was trained."""
    persona = _persona(store_settings, persona)
    if persona.live is None:
        return True
    try:
        live_hash = persona.metadata(persona.live).data_hash
    except Exception:
        return True
    return _examples(persona).data_hash != live_hash


def train_persona(
    store_settings: StoreSettings,
    name: str,
    config: TrainConfig | None = None,
    *,
    max_lora_rank: int,
    allowed_modules: set[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[Any], None] | None = None,
) -> TrainResult:
    """Train persona ``name`` from its logs and publish the adapter as its next live version.

    ``config`` defaults to :func:`config_for` (defaults + the card's overrides). ``resume`` continues
    from the checkpoint in the work folder (refused when it was made on another base model, other
    data or other settings). Raises :class:`TrainingError`, :class:`ConfigError` or a
    :class:`store.errors.StoreError`; the previous live version stays live on any failure.
    """
    from .trainer import work_lock

    persona = PersonaStore(store_settings.personas_dir).get(name)
    config = config or config_for(persona)
    if config.lora_r > max_lora_rank:
        raise ConfigError(f"lora_r: {config.lora_r} is above the server's max_lora_rank ({max_lora_rank})")
    with work_lock(work_dir(persona.path)):
        return _train_locked(store_settings, persona, config, max_lora_rank=max_lora_rank,
                             allowed_modules=allowed_modules, resume=resume, progress=progress, on_step=on_step)


def _train_locked(
    store_settings: StoreSettings,
    persona: Persona,
    config: TrainConfig,
    *,
    max_lora_rank: int,
    allowed_modules: set[str] | None,
    resume: bool,
    progress: bool,
    on_step: Callable[[Any], None] | None,
) -> TrainResult:
    from .publish import publish_adapter
    from .trainer import CHECKPOINT_FILE, train

    started = time.perf_counter()
    name = persona.name
    work = work_dir(persona.path)
    checkpoint = work / CHECKPOINT_FILE
    write_progress(persona.path, TrainingProgress(state="running", message=f"preparing {name}"))
    try:
        examples = _examples(persona)
        base = resolve_base_model(store_settings.base_model, store_settings.cache_dir, store_settings.allow_download)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            write_progress(persona.path, TrainingProgress(state="failed", message=str(exc)[:500]))
        raise
    if not resume:
        checkpoint.unlink(missing_ok=True)

    last: dict[str, Any] = {}

    def report(info: Any) -> None:
        last.update(step=info.step, total=info.total_steps)
        with contextlib.suppress(OSError):
            write_progress(persona.path, TrainingProgress(
                state="running", step=info.step, total_steps=info.total_steps, epoch=info.epoch,
                train_loss=info.loss, eval_loss=info.eval_loss, tokens_per_s=info.tokens_per_s,
                message=f"training {name}",
            ))
        if on_step:
            on_step(info)

    try:
        outcome = train(
            base, examples.train, examples.heldout, config,
            work_dir=work, resume=resume, progress=progress, on_step=report, description=name, lock=False,
        )
        write_progress(persona.path, TrainingProgress(
            state="running", step=outcome.steps, total_steps=outcome.total_steps,
            eval_loss=outcome.eval_loss_after, message="publishing",
        ))
        version, path = publish_adapter(
            persona.path, outcome, data_hash=examples.data_hash, max_lora_rank=max_lora_rank,
            allowed_modules=allowed_modules, persona_name=name,
            extra_metadata={"persona": name, "qlora": config.qlora},
        )
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)
        with contextlib.suppress(Exception):
            write_progress(persona.path, TrainingProgress(
                state="failed", step=last.get("step", 0), total_steps=last.get("total", 0),
                message="interrupted (resume with --resume)" if interrupted else str(exc)[:500],
            ))
        raise
    checkpoint.unlink(missing_ok=True)
    write_progress(persona.path, TrainingProgress(
        state="done", step=outcome.steps, total_steps=outcome.total_steps,
        train_loss=outcome.train_loss, eval_loss=outcome.eval_loss_after,
        tokens_per_s=round(outcome.tokens_per_s, 1), message=f"published v{version}",
    ))
    return TrainResult(
        name=name,
        version=version,
        path=path,
        data_hash=examples.data_hash,
        train_loss=outcome.train_loss,
        eval_loss_before=outcome.eval_loss_before,
        eval_loss_after=outcome.eval_loss_after,
        steps=outcome.steps,
        epochs=outcome.epochs,
        stopped_early=outcome.stopped_early,
        tokens_per_s=outcome.tokens_per_s,
        duration_s=time.perf_counter() - started,
        tokens=dict(outcome.tokens),
        resumed_from=outcome.resumed_from,
        truncated_examples=outcome.tokens.get("truncated_examples", 0),
    )
