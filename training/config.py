"""Training settings: one documented dataclass, its defaults, and validation of overrides.

Settings come from three places, later ones winning::

    TrainConfig()                     # the defaults below, sized for a persona on two CPU cores
    persona.yaml  training: {...}     # per-persona overrides, validated here
    command-line flags                # per-run overrides, validated here

``TrainConfig.from_overrides(card.training, flags)`` builds the effective settings and raises
:class:`ConfigError` naming the offending field (``persona.yaml: training.lora_r: must be a positive
integer``). The ``training:`` keys that shape the examples (``window``, ``session_gap_hours``,
``heldout_fraction``, ``min_examples``, ``name_prefixes``) are read by
``training.ingest.ExampleSettings.from_overrides`` and skipped here.

Epochs, when not set, are chosen from the data size (:meth:`TrainConfig.resolve_epochs`): the run aims
to show the model about ``auto_target_tokens`` trained (persona) tokens, so a small persona gets several
passes and a big one a single pass, never more than ``max_auto_epochs``. Early stopping on the held-out
loss then ends the run when more passes stop helping.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from store.adapters import SERVABLE_MODULES

__all__ = [
    "ConfigError",
    "TrainConfig",
    "TrainingError",
    "LINEAR_MODULES",
    "EXAMPLE_KEYS",
    "machine_threads",
]

LINEAR_MODULES: tuple[str, ...] = SERVABLE_MODULES
"""Every linear layer of a Llama-style decoder block: what the server can apply LoRA to."""

EXAMPLE_KEYS = frozenset({"window", "session_gap_hours", "heldout_fraction", "min_examples", "name_prefixes"})
"""``training:`` keys of ``persona.yaml`` that belong to example building, not to the trainer."""


class TrainingError(Exception):
    """Training or publishing cannot go on; the message says why and what to do."""


class ConfigError(TrainingError, ValueError):
    """A training setting is invalid; the message names where it came from and the field."""


def machine_threads() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class TrainConfig:
    """How a persona's adapter is trained. Every field has a default; see the module docstring."""

    # --- the adapter -------------------------------------------------------------------------------
    lora_r: int = 16
    """LoRA rank. Must not exceed the server's ``max_lora_rank``."""
    lora_alpha: float = 32.0
    """LoRA scaling numerator: the update is scaled by ``lora_alpha / lora_r``."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input during training (0 turns it off)."""
    target_modules: tuple[str, ...] = LINEAR_MODULES
    """Module names that get a LoRA; the default is every linear layer of each block. Embeddings and
    the output head are never adapted (the server cannot load ``modules_to_save``)."""

    # --- optimisation ------------------------------------------------------------------------------
    learning_rate: float = 1e-3
    """Peak AdamW learning rate (after warm-up; cosine decay to ``min_lr_ratio`` of it)."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""
    warmup_ratio: float = 0.05
    """Share of the steps spent warming the learning rate up linearly (at least one step)."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA weights."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 turns clipping off)."""
    batch_tokens: int = 2048
    """Token budget of one optimizer step: examples of similar length are grouped until their padded
    size (longest length x count) would exceed it (a longer example makes a step of its own). Bigger
    means fewer, smoother steps."""

    # --- how long ----------------------------------------------------------------------------------
    epochs: int | None = None
    """Passes over the training examples; ``None`` chooses them from the data size."""
    auto_target_tokens: int = 6_500
    """With ``epochs: null``: trained (persona) tokens the run aims to show the model in all. On the
    example personas (3,500-5,000 trained tokens a pass) the held-out loss is lowest after about two
    passes (bench/RESULTS.md, persona voice)."""
    max_auto_epochs: int = 5
    """With ``epochs: null``: the most passes chosen automatically."""
    max_steps: int | None = None
    """Stop after this many optimizer steps in all (mainly for tests and quick trials)."""
    max_seq_length: int = 1024
    """Longest example in tokens. Longer ones lose their oldest context turns, then tokens from the
    left, always keeping the target reply; they are counted in the report."""

    # --- evaluation --------------------------------------------------------------------------------
    eval_every: int | None = None
    """Held-out evaluation every N steps (and before training and at the end); ``None`` means twice
    per epoch."""
    early_stopping_patience: int = 3
    """Stop after this many evaluations without a better held-out loss (0 turns it off). The adapter
    with the best held-out loss is the one published."""
    early_stopping_min_delta: float = 0.001
    """How much lower a held-out loss must be to count as better."""

    # --- the run -----------------------------------------------------------------------------------
    seed: int = 1234
    """Seed for the LoRA initialisation, batch order and dropout: the same data gives the same adapter."""
    qlora: bool = False
    """Load the base model in 4-bit NF4 (bitsandbytes) and train the LoRA on top: less memory, on CPU
    slower than fp32 for small models."""
    bf16: bool = False
    """Compute in bfloat16 (autocast; the LoRA weights and optimizer stay fp32). Faster on GPUs and on
    CPUs with AVX512-BF16 or AMX; the default computes in fp32."""
    threads: int | None = None
    """Torch CPU threads; ``None`` uses every core this process may run on."""
    checkpoint_every: int = 25
    """Save a resumable checkpoint every N steps (also at each evaluation and on Ctrl-C)."""

    # ------------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            name, message = problems[0]
            raise ConfigError(f"{name}: {message}")

    @classmethod
    def from_overrides(
        cls,
        card_overrides: Mapping[str, Any] | None = None,
        flags: Mapping[str, Any] | None = None,
        *,
        card_label: str = "persona.yaml",
    ) -> "TrainConfig":
        """Defaults, then the card's ``training:`` mapping, then flags (``None`` values are not set).

        Raises :class:`ConfigError` naming the source and the field, e.g.
        ``persona.yaml: training.lora_r: must be a positive integer`` or ``--lora-r: must be ...``.
        """
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        if card_overrides is not None and not isinstance(card_overrides, Mapping):
            raise ConfigError(f"{card_label}: training: must be a mapping of settings")
        for key, value in (card_overrides or {}).items():
            label = f"{card_label}: training.{key}"
            if key in EXAMPLE_KEYS:
                continue
            if key not in known:
                raise ConfigError(f"{label}: unknown setting (known: {', '.join(sorted(set(known) | EXAMPLE_KEYS))})")
            values[key] = _coerce(key, value, label)
            sources[key] = label
        for key, value in (flags or {}).items():
            if value is None:
                continue
            label = "--" + key.replace("_", "-")
            if key not in known:
                raise ConfigError(f"{label}: unknown training setting")
            values[key] = _coerce(key, value, label)
            sources[key] = label
        candidate = {f.name: f.default for f in fields(cls)} | values
        for name, message in _problems_of(candidate):
            raise ConfigError(f"{sources.get(name, name)}: {message}")
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated)."""
        return type(self)(**(asdict(self) | changes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, as recorded in an adapter's metadata."""
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    def fingerprint(self) -> dict[str, Any]:
        """The settings a checkpoint must share to be resumed (those that change the result)."""
        data = self.to_dict()
        for name in ("max_steps", "threads", "checkpoint_every", "eval_every", "early_stopping_patience",
                     "early_stopping_min_delta"):
            data.pop(name)
        return data

    # --- derived values ----------------------------------------------------------------------------
    def resolve_epochs(self, target_tokens_per_epoch: int) -> int:
        """Epochs for a training set with this many trained tokens per pass.

        ``epochs`` when set; otherwise ``ceil(auto_target_tokens / target_tokens_per_epoch)`` clamped to
        1..``max_auto_epochs``. With the defaults a persona of 2,000 trained tokens gets 4 passes, one of
        4,000 gets 2, one of 50,000 gets 1.
        """
        if self.epochs is not None:
            return self.epochs
        if target_tokens_per_epoch <= 0:
            return 1
        return max(1, min(self.max_auto_epochs, math.ceil(self.auto_target_tokens / target_tokens_per_epoch)))

    def resolve_eval_every(self, steps_per_epoch: int) -> int:
        """Steps between evaluations: ``eval_every`` or half an epoch."""
        if self.eval_every is not None:
            return self.eval_every
        return max(1, math.ceil(steps_per_epoch / 2))

    def resolve_threads(self) -> int:
        return self.threads or machine_threads()


# --- validation ------------------------------------------------------------------------------------

_INT_FIELDS = {"lora_r", "batch_tokens", "auto_target_tokens", "max_auto_epochs", "max_seq_length",
               "early_stopping_patience", "seed", "checkpoint_every", "epochs", "max_steps",
               "eval_every", "threads"}
_FLOAT_FIELDS = {"lora_alpha", "lora_dropout", "learning_rate", "min_lr_ratio", "warmup_ratio",
                 "weight_decay", "max_grad_norm", "early_stopping_min_delta"}
_OPTIONAL = {"epochs", "max_steps", "eval_every", "threads"}


def _coerce(name: str, value: Any, label: str) -> Any:
    """Accept the obvious spellings (YAML/CLI): ints for floats, lists or comma strings for modules."""
    if value is None and name in _OPTIONAL:
        return None
    if name == "target_modules":
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{label}: must be a list of module names, e.g. [q_proj, v_proj]")
        return tuple(value)
    if name in _FLOAT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if name in _FLOAT_FIELDS and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{label}: must be a number, got {value!r}") from None
    if name in _INT_FIELDS and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if name in ("qlora", "bf16") and isinstance(value, str) and value.lower() in {"true", "false", "yes", "no", "1", "0"}:
        return value.lower() in {"true", "yes", "1"}
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _problems_of(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for every invalid value, in field order."""
    out: list[tuple[str, str]] = []

    def positive_int(name: str, optional: bool = False) -> None:
        value = values[name]
        if optional and value is None:
            return
        if not _is_int(value) or value < 1:
            out.append((name, "must be a positive integer" + (" or null" if optional else "") + f", got {value!r}"))

    def non_negative_int(name: str) -> None:
        value = values[name]
        if not _is_int(value) or value < 0:
            out.append((name, f"must be a whole number of at least 0, got {value!r}"))

    def number(name: str, low: float, high: float | None, low_open: bool = False, high_open: bool = False) -> None:
        value = values[name]
        ok = _is_number(value) and (value > low if low_open else value >= low)
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            low_text = f"above {low}" if low_open else f"at least {low}"
            high_text = "" if high is None else (f" and below {high}" if high_open else f" and at most {high}")
            out.append((name, f"must be a number {low_text}{high_text}, got {value!r}"))

    positive_int("lora_r")
    number("lora_alpha", 0, None, low_open=True)
    number("lora_dropout", 0, 1, high_open=True)
    modules = values["target_modules"]
    if not isinstance(modules, (tuple, list)) or not modules or not all(isinstance(m, str) and m for m in modules):
        out.append(("target_modules", f"must be a non-empty list of module names, got {modules!r}"))
    elif set(modules) - set(SERVABLE_MODULES):
        out.append(("target_modules", f"the server can only adapt {', '.join(SERVABLE_MODULES)}; "
                                      f"got {sorted(set(modules) - set(SERVABLE_MODULES))}"))
    number("learning_rate", 0, 1, low_open=True)
    number("min_lr_ratio", 0, 1)
    number("warmup_ratio", 0, 1, high_open=True)
    number("weight_decay", 0, None)
    number("max_grad_norm", 0, None)
    positive_int("batch_tokens")
    positive_int("epochs", optional=True)
    positive_int("auto_target_tokens")
    positive_int("max_auto_epochs")
    positive_int("max_steps", optional=True)
    value = values["max_seq_length"]
    if not _is_int(value) or value < 16:
        out.append(("max_seq_length", f"must be an integer of at least 16, got {value!r}"))
    positive_int("eval_every", optional=True)
    non_negative_int("early_stopping_patience")
    number("early_stopping_min_delta", 0, None)
    non_negative_int("seed")
    for name in ("qlora", "bf16"):
        if not isinstance(values[name], bool):
            out.append((name, f"must be true or false, got {values[name]!r}"))
    positive_int("threads", optional=True)
    positive_int("checkpoint_every")
    return out


def _problems(config: TrainConfig) -> list[tuple[str, str]]:
    return _problems_of({f.name: getattr(config, f.name) for f in fields(config)})
