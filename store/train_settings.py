"""Training settings: one pydantic model that is their documentation, defaults and validation.

Settings come from three places, later ones winning::

    TrainConfig()                     # the defaults below, sized for a persona on two CPU cores
    persona.yaml  training: {...}     # per-persona overrides
    command-line flags                # per-run overrides (``persona train --help`` lists one per field)

``TrainConfig.from_overrides(card.training, flags)`` builds the effective settings and raises
:class:`ConfigError` naming the source and the field (``persona.yaml: training.lora_r: must be a
positive integer``). The ``training:`` keys that shape the examples (:func:`example_keys`, read by
:class:`store.example_settings.ExampleSettings`) are skipped here. :func:`check_training` checks the
whole section when the card is read, so a typo is refused before any run starts.

It lives in the store because both sides read it: the trainer, and the server's fine-tuning API that
translates a job's hyperparameters into these settings. Each field's docstring is its documentation:
the command-line help and the README point here.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from .adapters import SERVABLE_MODULES
from .example_settings import ExampleSettings
from .setting_checks import ConfigError, Float, Int, TrainingError, field_kind, problems
from .settings import machine_threads

__all__ = [
    "ConfigError",
    "TrainConfig",
    "TrainingError",
    "LINEAR_MODULES",
    "RESUME_FREE",
    "check_training",
    "example_keys",
    "flag_name",
    "machine_threads",
    "setting_type",
]

LINEAR_MODULES: tuple[str, ...] = SERVABLE_MODULES
"""Every linear layer of a Llama-style decoder block: what the server can apply LoRA to."""

RESUME_FREE = (
    "max_steps", "time_budget_s", "preference_max_steps", "threads", "checkpoint_every", "eval_every",
    "early_stopping_patience", "early_stopping_min_delta", "tune_allocator", "gradient_checkpointing", "fused_lora",
    "head_on_trained_positions", "compile_decoder",
)  # fmt: skip
"""Settings a resumed run may change: they decide how long, how often or how fast, not what is learnt
(the fused forward, the trimmed head and the compiled decoder compute the same values, up to float
rounding)."""


def example_keys() -> frozenset[str]:
    """``training:`` keys of ``persona.yaml`` that shape the examples, not the trainer."""
    return ExampleSettings.card_keys()


def _module_list(value: Any) -> Any:
    """Modules as a YAML list or a comma-separated string (a flag)."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise PydanticCustomError("setting", "must be a list of module names, e.g. [q_proj, v_proj]")
    return tuple(value)


Modules = Annotated[tuple[str, ...], BeforeValidator(_module_list)]


class TrainConfig(BaseModel):
    """How a persona's adapter is trained. Every field has a default; its docstring documents it."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False, validate_default=True
    )

    # --- the adapter -------------------------------------------------------------------------------
    lora_r: Int = Field(16, ge=1)
    """LoRA rank. Must not exceed the server's max_lora_rank."""
    lora_alpha: Float = Field(32.0, gt=0)
    """LoRA scaling numerator: the update is scaled by lora_alpha / lora_r."""
    lora_dropout: Float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA input during training (0 turns it off)."""
    target_modules: Modules = LINEAR_MODULES
    """Module names that get a LoRA (a list, or comma-separated); the default is every linear layer of
    each block. Embeddings and the output head are never adapted (the server cannot load
    modules_to_save)."""

    # --- optimisation ------------------------------------------------------------------------------
    learning_rate: Float = Field(2e-3, gt=0, le=1)
    """Peak AdamW learning rate, after warm-up. With explicit epochs it then decays (cosine) to
    min_lr_ratio of it over the run; with epochs unset it stays at the peak, since the run's length is
    not known in advance (see training.schedule.lr_factor). The default reached the example personas' best
    held-out loss in fewer steps than 1e-3 (bench/RESULTS.md)."""
    min_lr_ratio: Float = Field(0.1, ge=0, le=1)
    """With explicit epochs: the final learning rate as a fraction of the peak."""
    warmup_ratio: Float = Field(0.05, ge=0, lt=1)
    """Share of the steps spent warming the learning rate up linearly (at least one step); with epochs
    unset, a share of one pass's steps."""
    weight_decay: Float = Field(0.0, ge=0)
    """AdamW weight decay on the LoRA weights."""
    max_grad_norm: Float = Field(1.0, ge=0)
    """Gradient clipping norm (0 turns clipping off)."""
    batch_tokens: Int = Field(2048, ge=1)
    """Token budget of one optimizer step: examples of similar length are grouped until their padded
    size (longest length x count) would exceed it (a longer example makes a step of its own). Bigger
    means fewer, smoother steps."""

    # --- what is trained on ------------------------------------------------------------------------
    whole_sessions: bool = True
    """Render each training session once with every character reply trained, instead of one example
    per reply carrying the turns before it (the held-out split stays one example per reply). The same
    replies then cost about a third of the tokens per pass, and each reply sees its whole conversation
    as it will when served. A session longer than max_seq_length is cut at turn boundaries."""
    synthetic_weight: Float = Field(0.5, ge=0, le=1)
    """Loss weight of accepted generated examples (personas/<name>/synthetic/, `persona augment`)
    against the real replies' 1: they add material without outweighing the real voice. 0 leaves them
    out. They are never held out for evaluation."""
    replay_share: Float = Field(0.1, ge=0, lt=1)
    """General conversation mixed in to limit forgetting, as a share of the persona's training
    examples (real and generated): the base model's own answers to a bundled set of everyday prompts,
    made once per base model and cached, trained at weight 1 with the base model's default system
    prompt. 0 turns it off."""

    # --- how long ----------------------------------------------------------------------------------
    epochs: Int | None = Field(None, ge=1)
    """Passes over the training examples, made in full (early stopping may still end the run sooner).
    Unset (null) lets learning choose: passes go on while the held-out loss still falls, until early
    stopping, time_budget_s or max_auto_epochs ends the run, so a big persona gets the passes it needs
    and a small one stops when it stops learning. The adapter with the best held-out loss is kept."""
    max_auto_epochs: Int = Field(20, ge=1)
    """With epochs unset: the most passes the run may make; a generous cap, as early stopping and the
    time budget normally end the run first."""
    time_budget_s: Float | None = Field(600.0, gt=0)
    """With epochs unset: seconds the run may spend on training steps and evaluations; when it is spent
    the run evaluates once more and keeps the best adapter so far. The default fits a persona's training
    on a 2-core machine in ten minutes. Unset (null): no time limit."""
    max_steps: Int | None = Field(None, ge=1)
    """Stop after this many optimizer steps in all (mainly for tests and quick trials)."""
    max_seq_length: Int = Field(1024, ge=16)
    """Longest example in tokens. Longer ones lose their oldest context turns, then tokens from the
    left, always keeping the target reply; they are counted in the report."""

    # --- evaluation --------------------------------------------------------------------------------
    eval_every: Int | None = Field(None, ge=1)
    """Held-out evaluation every N steps (and before training and at the end); unset means twice per
    epoch."""
    early_stopping_patience: Int = Field(1, ge=0)
    """Stop after this many evaluations without a better held-out loss (0 turns it off). The adapter
    with the best held-out loss is the one published. One: once a persona's held-out loss rises it has
    kept rising on every persona measured, so waiting longer only spends the user's time."""
    early_stopping_min_delta: Float = Field(0.001, ge=0)
    """How much lower a held-out loss must be to count as better."""

    # --- preference training (after the supervised run; off by default) -----------------------------
    preference: bool = False
    """After supervised training, a DPO stage: the character's real reply is preferred to a generic
    reply to the same turns (preference_rejected), with the supervised adapter as the reference, so the
    adapter moves away from the assistant voice. Off by default: on the example personas it raised the
    character's identity on one and lowered it on two, with more forgetting, for more than twice the
    training time (bench/RESULTS.md)."""
    preference_beta: Float = Field(0.1, gt=0)
    """DPO's beta: how far the adapter may move from the supervised one (smaller moves further)."""
    preference_sft_weight: Float = Field(1.0, ge=0)
    """Weight of the real reply's own loss (negative log-likelihood per trained token) added to DPO's,
    as RPO does (TRL's ``rpo_alpha``): DPO alone pushes the real replies' likelihood down along with
    the generic ones' (bench/RESULTS.md). 0 is plain DPO."""
    preference_epochs: Int = Field(1, ge=1)
    """Passes over the preference pairs."""
    preference_max_steps: Int | None = Field(None, ge=1)
    """Stop the preference stage after this many steps (mainly for tests and quick trials)."""
    preference_learning_rate: Float = Field(2e-4, gt=0, le=1)
    """AdamW learning rate of the preference stage, constant: lower than the supervised one, as DPO
    refines an adapter that already speaks as the character."""
    preference_pairs_per_step: Int = Field(4, ge=1)
    """Preference pairs in one optimizer step."""
    preference_rejected: str = "base"
    """Who writes the rejected replies: ``base`` (the base model with its default prompt, answering
    the last user turn) or ``card`` (the base model with the persona's short system prompt)."""

    # --- the run -----------------------------------------------------------------------------------
    seed: Int = Field(1234, ge=0)
    """Seed for the LoRA initialisation, batch order and dropout: the same data gives the same adapter."""
    qlora: bool = False
    """Load the base model in 4-bit NF4 (bitsandbytes) and train the LoRA on top: less memory, on CPU
    slower than fp32 for small models."""
    load_in_8bit: bool = False
    """Load the base model in 8-bit (bitsandbytes LLM.int8) and train the LoRA on top: half the
    memory of fp32 weights for a bigger base model; not together with qlora."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them: much
    less memory for long examples or big models, at the cost of a second forward pass."""
    bf16: bool | None = None
    """Compute in bfloat16 (autocast; the LoRA weights and optimizer stay fp32). Unset: on where the run
    is on a CPU with AMX tiles for bfloat16 (``amx_bf16``), which multiply bfloat16 several times
    faster than fp32 with the same held-out loss; off on other CPUs, where the backward pass can fall to
    one slow thread, and on GPUs (set it there). ``bench/train_step.py`` measures both."""
    compile_decoder: bool = False
    """Compile the decoder's forward with ``torch.compile`` (dynamic shapes, as batch lengths vary): the
    first step pays for the compile; off by default, as on the CPU it trains slower even after it
    (``bench/train_speed.py --ablate --levers-only``)."""
    threads: Int | None = Field(None, ge=1)
    """Torch CPU threads; unset uses every core this process may run on."""
    checkpoint_every: Int = Field(25, ge=1)
    """Save a resumable checkpoint every N steps (also at each evaluation and on Ctrl-C)."""

    # --- speed-ups (each can be turned off to measure it: bench/train_speed.py --ablate) -------------
    fused_lora: bool = True
    """Run each LoRA layer's scaled up-projection and residual addition as one addmm: the element-wise
    passes PEFT spends on them cost as much as the LoRA matmuls on a CPU."""
    head_on_trained_positions: bool = True
    """Run the output head (the vocabulary-wide projection and softmax) only at positions whose next
    token is trained, not at every position of the batch."""
    shared_dropout: bool = True
    """Layers that read the same input (q/k/v, gate/up) share one dropout draw of it, as a fused QKV
    LoRA does, instead of drawing a mask each."""
    fast_dropout: bool = True
    """Draw LoRA dropout masks from packed 16-bit random integers instead of one Bernoulli draw per
    element (the drop probability is rounded to a multiple of 1/32768)."""
    tune_allocator: bool = True
    """Tell glibc to keep freed activation buffers in the process instead of returning them to the
    kernel after every step, where page faults would dominate the element-wise work. Process-wide
    and lasting."""

    # ------------------------------------------------------------------------------------------------
    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise ConfigError.of(problems(error, type(self).model_fields, "unknown training setting")) from None

    @field_validator("target_modules")
    @classmethod
    def _servable(cls, modules: tuple[str, ...]) -> tuple[str, ...]:
        if not modules:
            raise PydanticCustomError("setting", "must be a non-empty list of module names, got []")
        unknown = sorted(set(modules) - set(SERVABLE_MODULES))
        if unknown:
            raise PydanticCustomError(
                "setting",
                "the server can only adapt {allowed}; got {unknown}",
                {"allowed": ", ".join(SERVABLE_MODULES), "unknown": str(unknown)},
            )
        return modules

    @field_validator("preference_rejected")
    @classmethod
    def _rejected_source(cls, value: str) -> str:
        if value not in ("base", "card"):
            raise PydanticCustomError("setting", "must be base or card, got {value}", {"value": value})
        return value

    @field_validator("load_in_8bit")
    @classmethod
    def _one_quantization(cls, value: bool, info: Any) -> bool:
        if value and info.data.get("qlora"):
            raise PydanticCustomError("setting", "load the base in 4-bit (qlora) or in 8-bit, not both")
        return value

    @classmethod
    def from_overrides(
        cls,
        card_overrides: Mapping[str, Any] | None = None,
        flags: Mapping[str, Any] | None = None,
        *,
        card_label: str = "persona.yaml",
    ) -> TrainConfig:
        """Defaults, then the card's ``training:`` mapping, then flags (``None`` values are not set).

        Raises :class:`ConfigError` naming the source and the field, e.g.
        ``persona.yaml: training.lora_r: must be a positive integer`` or ``--lora-r: must be ...``.
        """
        if card_overrides is not None and not isinstance(card_overrides, Mapping):
            raise ConfigError(f"{card_label}: training: must be a mapping of settings")
        known = set(cls.model_fields)
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for key, value in (card_overrides or {}).items():
            label = f"{card_label}: training.{key}"
            if key in known:
                values[key], sources[key] = value, label
            elif key not in example_keys():
                raise ConfigError(f"{label}: unknown setting (known: {', '.join(sorted(known | example_keys()))})")
        for key, value in (flags or {}).items():
            label = flag_name(key)
            if key not in known:
                raise ConfigError(f"{label}: unknown training setting")
            if value is not None:
                values[key], sources[key] = value, label
        try:
            return cls(**values)
        except ConfigError as error:
            raise ConfigError.of(error.problems, lambda name: sources.get(name, name)) from None

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return type(self)(**(self.model_dump() | changes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, as recorded in an adapter's metadata."""
        return self.model_dump(mode="json")

    def fingerprint(self) -> dict[str, Any]:
        """The settings a checkpoint must share to be resumed (those that change what is learnt)."""
        data = self.to_dict()
        for name in RESUME_FREE:
            data.pop(name)
        return data

    # --- derived values ----------------------------------------------------------------------------
    def resolve_epochs(self) -> int:
        """The passes the run plans for: ``epochs`` when set, else the cap ``max_auto_epochs`` (learning
        and the time budget end an automatic run, not a token count)."""
        return self.epochs if self.epochs is not None else self.max_auto_epochs

    @property
    def automatic_length(self) -> bool:
        """True when learning chooses the passes (``epochs`` unset)."""
        return self.epochs is None

    def resolve_time_budget(self) -> float | None:
        """Seconds the run may spend: ``time_budget_s`` for an automatic run, none for explicit epochs."""
        return self.time_budget_s if self.automatic_length else None

    def resolve_eval_every(self, steps_per_epoch: int) -> int:
        """Steps between evaluations: ``eval_every`` or half an epoch."""
        if self.eval_every is not None:
            return self.eval_every
        return max(1, math.ceil(steps_per_epoch / 2))

    def resolve_threads(self) -> int:
        return self.threads or machine_threads()

    def resolve_bf16(self, *, cuda: bool, amx_bf16: bool) -> bool:
        """Whether the run computes in bfloat16: ``bf16`` when set, else on a CPU with AMX for bfloat16."""
        return self.bf16 if self.bf16 is not None else (amx_bf16 and not cuda)


def flag_name(field: str) -> str:
    """The command-line flag of a setting: ``lora_r`` is ``--lora-r``."""
    return "--" + field.replace("_", "-")


def setting_type(name: str) -> tuple[type, bool]:
    """(the plain type, whether null is allowed) of a setting: ``(int, True)`` for ``epochs``."""
    return field_kind(TrainConfig.model_fields[name].annotation)


def check_training(section: Any) -> dict[str, Any]:
    """A card's ``training:`` mapping, checked as a whole: the trainer's keys, the example keys, nothing else.

    Raises pydantic's ``ValidationError`` with one entry per bad key (its location the key), so the card
    names ``training.<key>``; returns the mapping unchanged.
    """
    if not isinstance(section, Mapping):
        raise PydanticCustomError("setting", "must be a mapping of settings")
    known = set(TrainConfig.model_fields)
    found = [(key, _unknown(str(key), known | example_keys())) for key in section if key not in known | example_keys()]
    try:
        TrainConfig(**{key: value for key, value in section.items() if key in known})
    except ConfigError as error:
        found += error.problems
    try:
        ExampleSettings.from_overrides(section)
    except ConfigError as error:
        found += error.problems
    if found:
        raise ValidationError.from_exception_data(
            "training",
            [
                InitErrorDetails(
                    type=PydanticCustomError("setting", "{text}", {"text": text}), loc=(key,), input=section.get(key)
                )
                for key, text in found
            ],
        )
    return dict(section)


def _unknown(key: str, known: set[str] | frozenset[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return "unknown setting" + (f" (did you mean {close[0]}?)" if close else "")
