"""Loading the base model (with a fresh LoRA to train, or a published adapter) and the loss on it.

This is the one place that turns a :class:`store.base_model.BaseModel` into a torch model and a batch
into a loss, for training and for anything that evaluates an adapter::

    tokenizer = load_tokenizer(base)
    model = load_adapter_model(base, adapter_dir)          # or load_base_model(base) for no adapter
    split = encode_split(tokenizer, rows, max_seq_length)  # training.batches
    loss = heldout_loss(model, split, batch_tokens=4096, pad=pad_id(tokenizer))  # exp(loss): perplexity

The loss is the mean cross-entropy over the persona's (trained) tokens. The output head runs only on
the positions whose next token is trained unless told otherwise: its vocabulary-wide projection is
most of a small model's compute, and the other positions do not count towards the loss.
"""

from __future__ import annotations

import contextlib
import logging
import re
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import torch_env  # noqa: F401  (process options torch reads when it loads)

# isort: split
import torch
import torch.nn.functional as F
from torch import nn

from store.base_model import BaseModel

from .batches import Batch, EncodedSplit, collate, plan_batches
from .config import ConfigError, TrainConfig, TrainingError
from .speedups import apply_speedups

__all__ = [
    "LossPath",
    "heldout_loss",
    "load_adapter_model",
    "load_base_model",
    "load_model",
    "load_tokenizer",
    "model_device",
    "peak_memory",
    "reset_peak_memory",
    "resolved_dtype",
    "set_threads",
    "training_device",
]


# --- the process ----------------------------------------------------------------------------------


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in AMX tiles (Linux reports the ``amx_bf16`` flag)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            return any(line.startswith("flags") and " amx_bf16" in line for line in cpuinfo)
    except OSError:
        return False


def resolved_dtype(config: TrainConfig) -> TrainConfig:
    """``config`` with ``bf16`` decided for this machine (:meth:`TrainConfig.resolve_bf16`), as recorded."""
    return config.replace(bf16=config.resolve_bf16(cuda=torch.cuda.is_available(), amx_bf16=cpu_has_amx_bf16()))


def training_device() -> torch.device:
    """A CUDA GPU when there is one (``CUDA_VISIBLE_DEVICES`` picks it), else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def set_threads(count: int) -> None:
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


def reset_peak_memory() -> None:
    """Start measuring the peak memory of a run (resident set where Linux allows it, and CUDA)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the resident-set peak
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, float | None]:
    """Peak resident set of the process since :func:`reset_peak_memory` (MiB), and peak CUDA memory
    allocated (MiB, ``None`` without CUDA)."""
    rss_kib: float = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, lifetime peak
    with contextlib.suppress(OSError, AttributeError):
        found = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
        rss_kib = float(found.group(1))
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"peak_rss_mb": round(rss_kib / 1024, 1), "peak_cuda_mb": None if cuda is None else round(cuda, 1)}


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# --- loading -------------------------------------------------------------------------------------


def load_tokenizer(base: BaseModel) -> Any:
    """The base model's tokenizer; refused without a chat template (a chat model is needed)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base.path)
    if getattr(tokenizer, "chat_template", None) is None:
        raise TrainingError(f"base model {base.id} has no chat template; a chat (instruct) model is needed")
    return tokenizer


def load_base_model(base: BaseModel, config: TrainConfig | None = None) -> nn.Module:
    """The base causal LM on :func:`training_device`: fp32, or 4-bit (``qlora``) / 8-bit
    (``load_in_8bit``) with bitsandbytes, with gradient checkpointing when ``config`` asks for it."""
    from transformers import AutoModelForCausalLM

    config = config or TrainConfig()
    device = training_device()
    quantized = config.qlora or config.load_in_8bit
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if quantized:
        from transformers import BitsAndBytesConfig

        if device.type == "cuda":
            kwargs["device_map"] = {"": torch.cuda.current_device()}
        if config.qlora:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32,
            )
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
            # bitsandbytes logs on every 8-bit matmul of an fp32 model that its input is cast to fp16:
            # that is how LLM.int8 works, not news for each step.
            logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    try:
        model = AutoModelForCausalLM.from_pretrained(base.path, **kwargs)
    except Exception as exc:
        raise TrainingError(f"cannot load base model {base.id} from {base.path}: {exc}") from exc
    model.config.use_cache = False
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    else:
        model.to(device)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def load_model(base: BaseModel, config: TrainConfig) -> nn.Module:
    """The base model with a fresh LoRA (seeded) on ``config.target_modules``, ready to train."""
    from peft import LoraConfig, get_peft_model

    model = load_base_model(base, config)
    names = {name.split(".")[-1] for name, _ in model.named_modules()}
    missing = [m for m in config.target_modules if m not in names]
    if missing:
        raise ConfigError(f"target_modules: {missing} are not modules of base model {base.id}")
    torch.manual_seed(config.seed)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        modules_to_save=None,
    )
    model = get_peft_model(model, lora)
    apply_speedups(model, config)
    return model


def load_adapter_model(base: BaseModel, adapter_dir: Path) -> nn.Module:
    """The fp32 base model with a saved PEFT adapter on it, for evaluation (``TrainingError`` when the
    adapter does not load)."""
    from peft import PeftModel

    model = load_base_model(base)
    try:
        loaded = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
    except Exception as exc:
        raise TrainingError(f"{adapter_dir}: the adapter does not load with PEFT: {exc}") from exc
    return loaded.eval()


# --- the loss ------------------------------------------------------------------------------------


class LossPath:
    """Cross-entropy of a batch's trained tokens, summed with their weights (``batch.weights``): the
    decoder, then the output head either on the trained positions only or
    (``head_on_trained_positions=False``) on every position."""

    def __init__(
        self, model: nn.Module, *, bf16: bool = False, head_on_trained_positions: bool = True, compiled: bool = False
    ) -> None:
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.decoder = inner.get_decoder()
        if compiled:
            self.decoder = torch.compile(self.decoder, dynamic=True)
        self.head = inner.get_output_embeddings()
        self.cap = getattr(inner.config, "final_logit_softcapping", None)
        self.scale = getattr(inner.config, "logit_scale", None)
        self.bf16 = bf16
        self.head_only_trained = head_on_trained_positions

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden)
        if self.scale:
            logits = logits * self.scale
        if self.cap:
            logits = torch.tanh(logits / self.cap) * self.cap
        return logits

    def __call__(self, batch: Batch) -> torch.Tensor:
        return torch.dot(self.token_losses(batch), batch.weights)

    def token_losses(self, batch: Batch) -> torch.Tensor:
        """Cross-entropy of each trained token (``batch.positions``), unweighted."""
        with torch.autocast(batch.input_ids.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            hidden = self.decoder(input_ids=batch.input_ids, use_cache=False).last_hidden_state
            hidden = hidden.reshape(-1, hidden.shape[-1])
            if self.head_only_trained:
                logits = self.logits(hidden.index_select(0, batch.positions))
            else:
                logits = self.logits(hidden).index_select(0, batch.positions)
        return F.cross_entropy(logits.float(), batch.labels, reduction="none")


def heldout_loss(
    model: nn.Module, split: EncodedSplit, batch_tokens: int, pad: int, bf16: bool = False
) -> float | None:
    """Mean cross-entropy per trained token of ``split``, by token weight (``None`` for an empty split);
    its exp is the perplexity of the persona's replies. The model is left in the mode it was in."""
    if not len(split):
        return None
    loss_sum: Callable[[Batch], torch.Tensor] = LossPath(model, bf16=bf16)
    device = model_device(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.inference_mode():
            for indices in plan_batches(split.lengths, batch_tokens, 0, 0):
                batch = collate(split, indices, pad, device)
                total += float(loss_sum(batch))
                count += batch.weight_total
    finally:
        model.train(was_training)
    return total / (count or 1)
