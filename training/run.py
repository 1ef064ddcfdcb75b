"""Training one persona end to end: logs -> examples -> LoRA -> published version.

    from training.run import train_persona, needs_training
    result = train_persona(store_settings, "wren", TrainConfig.from_overrides(card.training, flags),
                           max_lora_rank=16)
    print(result.version, result.eval_loss_before, result.eval_loss_after)

This is the training step alone: it publishes and (by default) makes the version live, ungated. Every
job of the service and ``persona train`` go through the runner (:mod:`training.runner`), which builds
the examples once, trains through here with ``make_live=False``, then lets the fidelity gate decide.

The run trains on the training split of the logs, the persona's accepted generated examples (at
``synthetic_weight``) and general conversation (``replay_share``, :mod:`training.replay`); the
held-out split is the logs' alone (:mod:`training.mixture`). The counts of each go into the version's
metadata and report.

The run's work folder is ``personas/<name>/adapters/.work/`` (ignored by the version listing): the
resumable checkpoint, a lock that keeps two runs of one persona apart, and ``progress.json``
(:mod:`store.progress`) that the server shows as training progress. The checkpoint is removed once the
version is published.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import time
from collections.abc import Callable
from typing import Any

from store.adapters import set_live
from store.base_model import resolve_base_model
from store.progress import TrainingProgress, work_dir, write_progress
from store.registry import Persona, PersonaStore
from store.settings import StoreSettings

from .config import ConfigError, TrainConfig
from .ingest import ExampleSet, persona_examples
from .mixture import training_mix
from .replay import replay_answerer, replay_conversations
from .result import TrainResult

__all__ = ["TrainResult", "train_persona", "needs_training", "config_for"]


def _persona(store_settings: StoreSettings, persona: Persona | str) -> Persona:
    if isinstance(persona, Persona):
        return persona
    return PersonaStore(store_settings.personas_dir).get(persona)


def config_for(persona: Persona, flags: dict[str, Any] | None = None) -> TrainConfig:
    """The effective settings of a persona: defaults, its card's ``training:``, then ``flags``."""
    return TrainConfig.from_overrides(persona.card.training, flags or {}, card_label=str(persona.path / "persona.yaml"))


def needs_training(store_settings: StoreSettings, persona: Persona | str, examples: ExampleSet | None = None) -> bool:
    """True when the persona has no live version, or its examples changed since the live one was trained.

    ``examples`` are the persona's (:func:`training.ingest.persona_examples`), built here when not given.
    """
    persona = _persona(store_settings, persona)
    if persona.live is None:
        return True
    try:
        live_hash = persona.metadata(persona.live).data_hash
    except Exception:
        return True
    return (examples if examples is not None else persona_examples(persona)).data_hash != live_hash


def train_persona(
    store_settings: StoreSettings,
    name: str,
    config: TrainConfig | None = None,
    *,
    max_lora_rank: int,
    examples: ExampleSet | None = None,
    allowed_modules: set[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[TrainingProgress], None] | None = None,
    make_live: bool = True,
    eval_url: str | None = None,
) -> TrainResult:
    """Train persona ``name`` on its examples and publish the adapter as its next version.

    ``examples`` are the persona's (:func:`training.ingest.persona_examples`), built here when not
    given. ``make_live=False`` publishes the version beside the live one and leaves the progress at
    "evaluating" for the caller (the runner's gate) to finish. ``eval_url`` (a server's ``/v1`` root)
    answers the replay prompts the first time; without one they are answered in this process.

    ``config`` defaults to :func:`config_for` (defaults + the card's overrides). ``resume`` continues
    from the checkpoint in the work folder (refused when it was made on another base model, other
    data or other settings). Raises :class:`TrainingError`, :class:`ConfigError` or a
    :class:`store.errors.StoreError`; the previous live version stays live on any failure.
    """
    from .checkpoint import work_lock

    persona = PersonaStore(store_settings.personas_dir).get(name)
    config = config or config_for(persona)
    if config.lora_r > max_lora_rank:
        raise ConfigError(f"lora_r: {config.lora_r} is above the server's max_lora_rank ({max_lora_rank})")
    with work_lock(work_dir(persona.path)):
        return _train_locked(
            store_settings,
            persona,
            config,
            max_lora_rank=max_lora_rank,
            allowed_modules=allowed_modules,
            resume=resume,
            progress=progress,
            on_step=on_step,
            make_live=make_live,
            eval_url=eval_url,
            examples=examples,
        )


class _ProgressFile:
    """Keeps the persona's ``progress.json`` current for the server, and passes each report on."""

    def __init__(
        self, persona: Persona, on_step: Callable[[TrainingProgress], None] | None, show: bool = False
    ) -> None:
        self.persona, self.on_step, self.show = persona, on_step, show
        self.last = TrainingProgress(state="running", message=f"preparing {persona.name}")
        write_progress(persona.path, self.last)

    def __call__(self, info: TrainingProgress) -> None:
        # Publishing follows: the run is not done before it.
        self.write(info.model_copy(update={"state": "running", "message": f"training {self.persona.name}"}))
        if self.on_step:
            self.on_step(info)

    def say(self, message: str) -> None:
        """A step of the preparation, shown as the progress message (and on stderr with a progress bar)."""
        self.write(TrainingProgress(state="running", message=f"preparing {self.persona.name}: {message}"))
        if self.on_step:
            self.on_step(self.last)
        if self.show:
            print(f"{self.persona.name}: {message}", file=sys.stderr, flush=True)

    def write(self, progress: TrainingProgress) -> None:
        self.last = progress
        with contextlib.suppress(OSError):
            write_progress(self.persona.path, progress)

    def failed(self, exc: BaseException) -> None:
        interrupted = not isinstance(exc, Exception)
        message = "interrupted (resume with --resume)" if interrupted else str(exc)[:500]
        self.write(TrainingProgress(state="failed", step=self.last.step, total_steps=self.last.total_steps,
                                    message=message))  # fmt: skip


def _preference_stage(
    store_settings: StoreSettings,
    persona: Persona,
    base: Any,
    config: TrainConfig,
    examples: ExampleSet,
    outcome: TrainResult,
    answerer: Any,
    report: _ProgressFile,
) -> dict[str, Any]:
    """DPO on the supervised adapter (:mod:`training.preference`): the character's training replies
    preferred to the generic voice's replies to the same user turns; returns the stage's figures, with
    the held-out loss after it (the supervised run's is the metadata's ``eval_loss_after``)."""
    from store.preference import read_persona_pairs

    from .preference import Pair, PreferenceRecipe, last_user_turns, preference_pairs, prompt_turns
    from .preference_data import rejected_replies

    def after(info: TrainingProgress) -> None:
        """The stage's steps numbered after the supervised ones: the job's metrics events and progress
        go on counting rather than starting again at step 1."""
        done = outcome.steps
        report(info.model_copy(update={"step": done + info.step, "total_steps": done + info.total_steps}))

    given = read_persona_pairs(persona.path)
    if given:  # pairs given with the persona (the fine-tuning API's preference files) win
        report.say(f"preference pairs: {len(given)} given")
        stage = PreferenceRecipe(outcome.model, outcome.tokenizer, config, on_step=after,
                                 description=f"{persona.name} preference")  # fmt: skip
        stage.setup([Pair(p.prompt, p.chosen, p.rejected) for p in given])
        return _with_heldout_loss(stage.train() | {"rejected": "given"}, config, examples, outcome)
    turns = prompt_turns(examples.train)
    report.say(f"preference pairs: {len(turns)} replies against the {config.preference_rejected} voice")
    rejected = rejected_replies(
        config.preference_rejected, last_user_turns(turns), cache_dir=store_settings.cache_dir, base=base,
        persona=persona.name, answerer=answerer, model=outcome.model, tokenizer=outcome.tokenizer,
        system_prompt=persona.card.effective_system_prompt(persona.name), say=report.say,
    )  # fmt: skip
    stage = PreferenceRecipe(outcome.model, outcome.tokenizer, config, on_step=after,
                             description=f"{persona.name} preference")  # fmt: skip
    stage.setup(preference_pairs(turns, rejected))
    figures = _with_heldout_loss(stage.train(), config, examples, outcome)
    after = figures["eval_loss_after"]
    report.say(f"preference stage: {figures['steps']} steps, margin {figures['margin']:.3f}, "
               f"accuracy {figures['accuracy']:.2f}, held-out loss "
               f"{outcome.eval_loss_after or 0:.4f} -> {after if after is not None else float('nan'):.4f}")  # fmt: skip
    return figures


def _with_heldout_loss(figures: dict[str, Any], config: TrainConfig, examples: ExampleSet, outcome: TrainResult):
    """The stage's figures and the held-out loss of the adapter it leaves (what is published)."""
    from .batches import encode_split, pad_id
    from .model import heldout_loss

    split = encode_split(outcome.tokenizer, examples.heldout, config.max_seq_length)
    loss = heldout_loss(outcome.model, split, config.batch_tokens * 2, pad_id(outcome.tokenizer), config.bf16)
    return figures | {"eval_loss_after": None if loss is None else round(loss, 5)}


def _train_locked(
    store_settings: StoreSettings,
    persona: Persona,
    config: TrainConfig,
    *,
    max_lora_rank: int,
    allowed_modules: set[str] | None,
    resume: bool,
    progress: bool,
    on_step: Callable[[TrainingProgress], None] | None,
    make_live: bool,
    eval_url: str | None,
    examples: ExampleSet | None,
) -> TrainResult:
    from .checkpoint import CHECKPOINT_FILE
    from .loop import train
    from .publish import publish_adapter

    started = time.perf_counter()
    name, work = persona.name, work_dir(persona.path)
    report = _ProgressFile(persona, on_step, show=progress)
    try:
        examples = examples if examples is not None else persona_examples(persona)
        base = resolve_base_model(store_settings.base_model, store_settings.cache_dir, store_settings.allow_download)
        answerer = replay_answerer(base, eval_url, progress=progress, say=report.say)
        replay = functools.partial(replay_conversations, store_settings.cache_dir, base, answerer, report.say)
        real = examples.training_rows(config.whole_sessions)
        mix = training_mix(persona, real, config, replay, replies=len(examples.train))
        report.say(mix.describe())
        if not resume:
            (work / CHECKPOINT_FILE).unlink(missing_ok=True)
        outcome = train(base, mix.train, examples.heldout, config, work_dir=work, resume=resume,
                        progress=progress, on_step=report, description=name, lock=False)  # fmt: skip
        outcome.examples = mix.counts
        if config.preference:
            outcome.preference = _preference_stage(store_settings, persona, base, outcome.config, examples,
                                                   outcome, answerer, report)  # fmt: skip
        report.write(TrainingProgress(state="running", step=outcome.steps, total_steps=outcome.total_steps,
                                      eval_loss=outcome.eval_loss_after, message="publishing"))  # fmt: skip
        version, path = publish_adapter(
            persona.path, outcome, data_hash=examples.data_hash, max_lora_rank=max_lora_rank,
            allowed_modules=allowed_modules, persona_name=name, make_live=False,
            extra_metadata={"persona": name, "qlora": config.qlora}
            | ({"preference": outcome.preference} if outcome.preference else {}),
        )  # fmt: skip
        (work / CHECKPOINT_FILE).unlink(missing_ok=True)
        outcome.model = None  # the evaluation loads the published adapter itself
        if make_live:
            set_live(persona.path, version)
    except BaseException as exc:
        report.failed(exc)
        raise
    report.write(TrainingProgress(
        state="done" if make_live else "running", step=outcome.steps, total_steps=outcome.total_steps,
        train_loss=outcome.train_loss, eval_loss=outcome.eval_loss_after, tokens_per_s=round(outcome.tokens_per_s, 1),
        message=f"published v{version}" if make_live else f"evaluating v{version}",
    ))  # fmt: skip
    total_s = time.perf_counter() - started
    return dataclasses.replace(outcome, model=None, name=name, version=version, path=path, data_hash=examples.data_hash,
                               total_s=total_s)  # fmt: skip
