"""The LoRA training loop: transformers + PEFT on the CPU (or whatever device torch has), built for speed.

What makes it fast on two CPU cores, compared with ``transformers.Trainer`` on padded batches:

* **Each example is rendered and tokenized once**, up front (:func:`encode_split`).
* **Length-grouped batches under a token budget** (:func:`plan_batches`): examples are sorted by length
  and packed until ``longest x count`` reaches ``batch_tokens``, so almost no compute goes to padding.
  The batch order is shuffled every epoch; the grouping varies among examples of equal length.
* **No attention mask at all.** Padding goes on the right, and with causal attention no real token
  can see a later (pad) position, so the model runs the plain causal kernel instead of a masked one.
* **The output head runs only where the loss is taken.** Hidden states are computed for every
  position, but the 49k-wide vocabulary projection and the softmax only for positions whose next
  token is a persona token (about one in six in chat data).
* **Cheaper LoRA layers**: the dropout mask is drawn as packed 16-bit integers instead of a Bernoulli
  draw per element; layers reading the same input (q/k/v, gate/up) share one dropout draw of it, as a
  fused QKV LoRA does; the scaled up-projection and the residual addition are one ``addmm``. On the
  CPU these element-wise passes otherwise cost as much as the LoRA matmuls themselves.
* **Allocator tuning**: glibc is told to keep freed activation buffers instead of handing them back
  to the kernel after every step (otherwise page faults dominate the element-wise work).
* ``torch.inference_mode`` and twice the batch budget for evaluation; torch threads = cores.

Computation is fp32 by default (``bf16=True`` autocasts to bfloat16); QLoRA loads the base in 4-bit NF4
with bitsandbytes. A CUDA GPU is used when there is one.

Loss is the mean cross-entropy over the persona's tokens of a batch (labels are -100 elsewhere in the
standard formulation; here they are simply never computed). The held-out loss is evaluated before
training, every ``eval_every`` steps and at the end; training stops early when it stops improving and
the best adapter is kept. A checkpoint (adapter, optimizer, scheduler, step, RNG, history) is written
every ``checkpoint_every`` steps, at each evaluation and on Ctrl-C; ``resume=True`` continues from it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

# Training usually shares the cores with the server or other programs. OpenMP worker threads that
# spin while they wait turn every step into a crawl as soon as another process holds a core, so they
# sleep instead unless told otherwise. (libgomp reads this once, when torch is first imported.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# bitsandbytes (imported by peft) tries to fetch an optional CPU kernel from a model hub, warns when it
# cannot, and uses its built-in kernel: the warning is noise for every run here.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from store.adapters import AdapterMetadata
from store.base_model import BaseModel
from store.registry import check_same_base

from .config import ConfigError, TrainConfig, TrainingError
from store.chat_format import RenderError, render_conversation, trained

__all__ = [
    "EncodedSplit",
    "TrainOutcome",
    "Progress",
    "encode_split",
    "plan_batches",
    "load_tokenizer",
    "load_model",
    "evaluate",
    "train",
    "work_lock",
    "CHECKPOINT_FILE",
]

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


# --- data ------------------------------------------------------------------------------------------


@dataclass
class EncodedSplit:
    """A split rendered and tokenized once: ids and loss masks per example, and their counts."""

    ids: list[list[int]]
    masks: list[list[int]]
    truncated: int = 0
    """Examples over ``max_seq_length`` that lost context (they are kept)."""
    skipped: int = 0
    """Examples with no trained token (nothing to learn from them)."""

    @property
    def lengths(self) -> list[int]:
        return [len(i) for i in self.ids]

    @property
    def tokens(self) -> int:
        return sum(len(i) for i in self.ids)

    @property
    def target_tokens(self) -> int:
        return sum(sum(m) for m in self.masks)

    def __len__(self) -> int:
        return len(self.ids)

    def digest(self) -> str:
        """Identifies the exact token data (a checkpoint is only resumed on the same data)."""
        h = hashlib.sha256()
        for ids, mask in zip(self.ids, self.masks):
            h.update(json.dumps([ids, mask], separators=(",", ":")).encode())
        return h.hexdigest()


def _rows(data: Any) -> Iterable[dict[str, Any]]:
    return data if data is not None else []


def encode_split(tokenizer: Any, rows: Iterable[Mapping[str, Any]], max_seq_length: int) -> EncodedSplit:
    """Render and tokenize every row (``{"messages": [...]}``) with the base tokenizer's template.

    An example longer than ``max_seq_length`` first loses its oldest context turns (the system prompt
    stays), then tokens from the left; the target reply is always kept (its end, if it alone is too
    long). Such examples are counted in ``truncated``.
    """
    out = EncodedSplit(ids=[], masks=[])
    for number, row in enumerate(_rows(rows)):
        messages = list(row["messages"])
        try:
            ids, mask = render_conversation(tokenizer, messages)
            if len(ids) > max_seq_length:
                out.truncated += 1
                ids, mask = _shorten(tokenizer, messages, ids, mask, max_seq_length)
        except RenderError as exc:
            raise TrainingError(f"example {number} (session {row.get('session', '?')}): {exc}") from exc
        if not any(mask):
            out.skipped += 1
            continue
        out.ids.append(ids)
        out.masks.append(mask)
    return out


def _shorten(tokenizer: Any, messages: list[dict], ids: list[int], mask: list[int], limit: int):
    """Fit an example into ``limit`` tokens: drop the oldest context turns, then cut from the left."""
    first = 1 if messages and messages[0].get("role") == "system" else 0
    trimmed = list(messages)
    while len(ids) > limit and first < len(trimmed) - 1 and not trained(trimmed[first]):
        del trimmed[first]
        ids, mask = render_conversation(tokenizer, trimmed)
    if len(ids) > limit:
        # End at the last trained token (the end-of-turn token), so the target's end is always kept.
        end = max((i for i, m in enumerate(mask) if m), default=len(ids) - 1) + 1
        end = max(end, limit)
        ids, mask = ids[end - limit : end], mask[end - limit : end]
    return ids, mask


def plan_batches(lengths: Sequence[int], batch_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of example indices for one epoch: length-sorted, packed to ``batch_tokens``, shuffled.

    The same (lengths, budget, seed, epoch) always gives the same batches; the number of batches
    depends only on the lengths and the budget, so it is the same every epoch.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        length = lengths[index]
        if current and max(longest, length) * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


@dataclass
class _Batch:
    input_ids: torch.Tensor  # [B, L], right-padded
    positions: torch.Tensor  # flat indices into [B*L] of hidden states that predict a trained token
    labels: torch.Tensor  # the trained tokens, aligned with positions
    tokens: int  # real (unpadded) tokens
    targets: int


def _collate(split: EncodedSplit, indices: Sequence[int], pad_id: int, device: torch.device | None = None) -> _Batch:
    width = max(len(split.ids[i]) for i in indices)
    input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    positions: list[int] = []
    labels: list[int] = []
    tokens = 0
    for row, index in enumerate(indices):
        ids, mask = split.ids[index], split.masks[index]
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        tokens += len(ids)
        base = row * width
        for t in range(1, len(ids)):
            if mask[t]:
                positions.append(base + t - 1)
                labels.append(ids[t])
    positions_t = torch.tensor(positions, dtype=torch.long)
    labels_t = torch.tensor(labels, dtype=torch.long)
    if device is not None and device.type != "cpu":
        input_ids, positions_t, labels_t = input_ids.to(device), positions_t.to(device), labels_t.to(device)
    return _Batch(
        input_ids=input_ids,
        positions=positions_t,
        labels=labels_t,
        tokens=tokens,
        targets=len(labels),
    )


# --- model -----------------------------------------------------------------------------------------


class FastDropout(nn.Module):
    """Inverted dropout whose mask comes from packed random integers (much cheaper on the CPU).

    Each element is dropped with probability ``p`` rounded to a multiple of 1/32768.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.threshold = int(round(p * 32768))
        self.scale = 1.0 / (1.0 - self.threshold / 32768)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        count = x.numel()
        bits = torch.empty((count + 3) // 4, dtype=torch.int64, device=x.device).random_()
        keep = (bits.view(torch.int16)[:count].view(x.shape) & 0x7FFF) >= self.threshold
        return x * keep.to(x.dtype).mul_(self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _use_fast_dropout(model: nn.Module, p: float) -> None:
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, nn.ModuleDict):
            for name, layer in list(dropouts.items()):
                if isinstance(layer, nn.Dropout) and layer.p > 0:
                    dropouts[name] = FastDropout(layer.p)


class _LastDropped:
    """The last (input, dropped input) pair, shared by the LoRA layers of one model.

    q/k/v (and gate/up) read the very same input tensor one after the other; they share one dropout
    draw of it, as a fused QKV LoRA does (litgpt), instead of drawing three masks.
    """

    __slots__ = ("source", "dropped", "p")

    def __init__(self) -> None:
        self.source: torch.Tensor | None = None
        self.dropped: torch.Tensor | None = None
        self.p: float | None = None


def _fused_lora_forward(layer: nn.Module, shared: _LastDropped) -> Callable[..., torch.Tensor]:
    """A training forward for a plain ``peft`` LoRA ``Linear``: ``base(x) + s * B(A(drop(x)))`` with the
    scaled up-projection and the addition done by one ``addmm`` (PEFT spends two extra full-size
    element-wise passes on them, forward and backward). Falls back to PEFT's forward whenever the layer
    is merged, disabled or evaluating."""
    original = layer.forward

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not layer.training or layer.merged or layer.disable_adapters or args or kwargs:
            return original(x, *args, **kwargs)
        result = layer.base_layer(x)
        for name in layer.active_adapters:
            if name not in layer.lora_A:
                continue
            dropout = layer.lora_dropout[name]
            if isinstance(dropout, nn.Identity):
                dropped = x
            elif shared.source is x and shared.dropped is not None and getattr(dropout, "p", None) == shared.p:
                dropped = shared.dropped
            else:
                dropped = dropout(x)
                shared.source, shared.dropped, shared.p = x, dropped, getattr(dropout, "p", None)
            hidden = F.linear(dropped, layer.lora_A[name].weight)
            shape = result.shape
            result = torch.addmm(
                result.reshape(-1, shape[-1]), hidden.reshape(-1, hidden.shape[-1]),
                layer.lora_B[name].weight.t(), alpha=layer.scaling[name],
            ).view(shape)
        return result

    return forward


def _use_fused_lora(model: nn.Module) -> int:
    """Install :func:`_fused_lora_forward` on every plain LoRA linear layer; returns how many."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:  # pragma: no cover
        return 0
    shared = _LastDropped()
    count = 0
    for module in model.modules():
        if type(module) is not LoraLinear or not isinstance(module.base_layer, nn.Linear):
            continue
        if any(module.lora_bias.values()) or getattr(module, "lora_variant", None) or module.fan_in_fan_out:
            continue
        module.forward = _fused_lora_forward(module, shared)
        count += 1
    return count


_MALLOC_TUNED = False


def tune_allocator() -> None:
    """Keep freed buffers in the process (glibc): saves a page fault storm on every training step."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD: serve up to 32 MiB from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: do not give the heap top back eagerly
        libc.mallopt(-2, 64 * 1024 * 1024)  # M_TOP_PAD
    _MALLOC_TUNED = True


def set_threads(count: int) -> None:
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


def training_device() -> torch.device:
    """A CUDA GPU when there is one (``CUDA_VISIBLE_DEVICES`` picks it), else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_tokenizer(base: BaseModel) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base.path)
    if getattr(tokenizer, "chat_template", None) is None:
        raise TrainingError(f"base model {base.id} has no chat template; a chat (instruct) model is needed")
    return tokenizer


def load_model(base: BaseModel, config: TrainConfig) -> nn.Module:
    """The base model with a fresh LoRA (seeded) on ``config.target_modules``; 4-bit base with qlora."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    device = training_device()
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if config.qlora:
        from transformers import BitsAndBytesConfig

        if device.type == "cuda":
            kwargs["device_map"] = {"": torch.cuda.current_device()}

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(base.path, **kwargs)
    except Exception as exc:
        raise TrainingError(f"cannot load base model {base.id} from {base.path}: {exc}") from exc
    model.config.use_cache = False
    if not config.qlora:
        model.to(device)
    if config.qlora:
        from peft import prepare_model_for_kbit_training

        # Gradient checkpointing would only trade speed for memory a 135M model does not need.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    missing = [m for m in config.target_modules if not any(n.split(".")[-1] == m for n, _ in model.named_modules())]
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
    _use_fast_dropout(model, config.lora_dropout)
    _use_fused_lora(model)
    return model


def _parts(model: nn.Module) -> tuple[nn.Module, nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The decoder stack, the output head and the logit post-processing of a causal LM (PEFT or not)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = inner.get_decoder()
    head = inner.get_output_embeddings()
    cfg = inner.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    scale = getattr(cfg, "logit_scale", None)

    def post(logits: torch.Tensor) -> torch.Tensor:
        if scale:
            logits = logits * scale
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return decoder, head, post


def _loss_sum(parts, batch: _Batch, bf16: bool = False) -> torch.Tensor:
    """Summed cross-entropy of the trained tokens of a batch."""
    decoder, head, post = parts
    with torch.autocast(batch.input_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        hidden = decoder(input_ids=batch.input_ids, use_cache=False).last_hidden_state
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.positions)
        logits = post(head(hidden))
    return F.cross_entropy(logits.float(), batch.labels, reduction="sum")


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def evaluate(model: nn.Module, split: EncodedSplit, batch_tokens: int, pad_id: int, bf16: bool = False) -> float | None:
    """Mean cross-entropy per trained token of ``split`` (``None`` for an empty split)."""
    if not len(split):
        return None
    parts = _parts(model)
    device = model_device(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.inference_mode():
            for indices in plan_batches(split.lengths, batch_tokens, 0, 0):
                batch = _collate(split, indices, pad_id, device)
                total += float(_loss_sum(parts, batch, bf16))
                count += batch.targets
    finally:
        model.train(was_training)
    return total / max(count, 1)


# --- the run ---------------------------------------------------------------------------------------


@dataclass
class Progress:
    """Where a run stands; passed to ``on_step`` after every step and evaluation."""

    state: str
    step: int
    total_steps: int
    epoch: float
    loss: float | None = None
    eval_loss: float | None = None
    best_eval_loss: float | None = None
    tokens_per_s: float | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None


@dataclass
class TrainOutcome:
    """A finished run: the model with the best adapter loaded, and the figures for the report."""

    model: nn.Module
    tokenizer: Any
    config: TrainConfig
    base: BaseModel
    steps: int
    total_steps: int
    epochs: int
    steps_per_epoch: int
    stopped_early: bool
    best_step: int
    train_loss: float | None
    eval_loss_before: float | None
    eval_loss_after: float | None
    history: list[dict[str, float]]
    """One entry per step: step, loss, lr, tokens, targets, seconds."""
    evals: list[dict[str, float]]
    """One entry per evaluation: step, loss."""
    tokens: dict[str, int]
    duration_s: float
    train_seconds: float
    """Time spent in training steps only (no evaluation or checkpoints)."""
    resumed_from: int | None = None

    @property
    def tokens_per_s(self) -> float:
        seen = sum(h["tokens"] for h in self.history)
        seconds = sum(h["seconds"] for h in self.history)
        return seen / seconds if seconds else 0.0


def _lr_lambda(total_steps: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


@contextlib.contextmanager
def work_lock(work_dir: Path):
    """Hold the work folder's lock: one training run per persona at a time (TrainingError if taken)."""
    import fcntl

    work_dir.mkdir(parents=True, exist_ok=True)
    with open(work_dir / "lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError(f"{work_dir}: another training run of this persona is in progress") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _meta(base: BaseModel, config: TrainConfig, data_digest: str) -> dict[str, Any]:
    return {"base_model": base.id, "base_hash": base.hash, "data": data_digest, "config": config.fingerprint()}


def read_checkpoint_meta(work_dir: Path) -> dict[str, Any] | None:
    path = work_dir / CHECKPOINT_FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state.get("meta")


def train(
    base: BaseModel,
    train_rows: Any,
    heldout_rows: Any,
    config: TrainConfig,
    *,
    work_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[Progress], None] | None = None,
    tokenizer: Any = None,
    description: str = "training",
    lock: bool = True,
) -> TrainOutcome:
    """Train a LoRA on ``train_rows`` (rows of ``{"messages": [...]}``), evaluating on ``heldout_rows``.

    ``work_dir`` holds the checkpoint and a lock (one run per folder at a time; ``lock=False`` when the
    caller holds :func:`work_lock` already); with ``resume=True`` the run continues from the checkpoint
    there, refused if the base model, the data or the settings changed. ``on_step`` gets a
    :class:`Progress` after the first evaluation and after every step.
    """
    with work_lock(work_dir) if work_dir and lock else contextlib.nullcontext():
        return _train(base, train_rows, heldout_rows, config, work_dir=work_dir, resume=resume,
                      progress=progress, on_step=on_step, tokenizer=tokenizer, description=description)


def _train(
    base: BaseModel,
    train_rows: Any,
    heldout_rows: Any,
    config: TrainConfig,
    *,
    work_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[Progress], None] | None = None,
    tokenizer: Any = None,
    description: str = "training",
) -> TrainOutcome:
    started = time.perf_counter()
    tune_allocator()
    set_threads(config.resolve_threads())
    tokenizer = tokenizer or load_tokenizer(base)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    train_split = encode_split(tokenizer, train_rows, config.max_seq_length)
    heldout_split = encode_split(tokenizer, heldout_rows, config.max_seq_length)
    if not len(train_split):
        raise TrainingError("no training examples with a persona turn to learn from")
    digest = hashlib.sha256((train_split.digest() + heldout_split.digest()).encode()).hexdigest()

    epochs = config.resolve_epochs(train_split.target_tokens)
    steps_per_epoch = len(plan_batches(train_split.lengths, config.batch_tokens, config.seed, 0))
    total_steps = epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    eval_every = config.resolve_eval_every(steps_per_epoch)
    warmup = max(1, round(config.warmup_ratio * total_steps)) if config.warmup_ratio > 0 else 0

    meta = _meta(base, config, digest)
    checkpoint_path = work_dir / CHECKPOINT_FILE if work_dir else None
    saved: dict[str, Any] | None = None
    if resume and checkpoint_path and checkpoint_path.is_file():
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        _check_resumable(saved, base, meta, checkpoint_path)

    model = load_model(base, config)
    model.train()
    device = model_device(model)
    parts = _parts(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay, foreach=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, warmup, config.min_lr_ratio))

    step = 0
    epoch = 0
    batch_index = 0
    history: list[dict[str, float]] = []
    evals: list[dict[str, float]] = []
    best_loss: float | None = None
    best_step = 0
    best_state: dict[str, torch.Tensor] | None = None
    stale = 0
    eval_before: float | None = None
    resumed_from: int | None = None
    stopped_early = False

    if saved is not None:
        state, saved = saved, None
        _load_trainable(model, state["lora"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, batch_index = state["step"], state["epoch"], state["batch_index"]
        history, evals = state["history"], state["evals"]
        best_loss, best_step, best_state = state["best_loss"], state["best_step"], state["best_state"]
        stale, eval_before = state["stale"], state["eval_before"]
        stopped_early = state["stopped_early"]
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        resumed_from = step
    else:
        torch.manual_seed(config.seed)
        random.seed(config.seed)

    def save_checkpoint() -> None:
        if not checkpoint_path:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "meta": meta,
            "lora": _trainable_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "epoch": epoch,
            "batch_index": batch_index,
            "history": history,
            "evals": evals,
            "best_loss": best_loss,
            "best_step": best_step,
            "best_state": best_state,
            "stale": stale,
            "stopped_early": stopped_early,
            "eval_before": eval_before,
            "rng": {
                "torch": torch.get_rng_state(),
                "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
        }
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".pt", dir=checkpoint_path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(state, handle)
            os.replace(tmp, checkpoint_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def report(state_name: str, loss: float | None) -> None:
        elapsed = time.perf_counter() - started
        recent = history[-20:]
        seconds = sum(h["seconds"] for h in recent)
        tps = sum(h["tokens"] for h in recent) / seconds if seconds else None
        per_step = seconds / len(recent) if recent else None
        info = Progress(
            state=state_name,
            step=step,
            total_steps=total_steps,
            epoch=round(step / steps_per_epoch, 3),
            loss=loss,
            eval_loss=evals[-1]["loss"] if evals else None,
            best_eval_loss=best_loss,
            tokens_per_s=round(tps, 1) if tps else None,
            elapsed_s=round(elapsed, 1),
            eta_s=round(per_step * (total_steps - step), 1) if per_step else None,
        )
        if on_step:
            on_step(info)

    def run_eval() -> bool:
        """Evaluate, track the best adapter; True when early stopping says stop."""
        nonlocal best_loss, best_step, best_state, stale
        loss = evaluate(model, heldout_split, config.batch_tokens * 2, pad_id, config.bf16)
        if loss is None:
            return False
        evals.append({"step": step, "loss": loss})
        if best_loss is None or loss < best_loss - config.early_stopping_min_delta:
            best_loss, best_step, best_state, stale = loss, step, _trainable_state(model), 0
        else:
            stale += 1
        return bool(config.early_stopping_patience) and stale >= config.early_stopping_patience

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, disable=not progress, unit="step", desc=description,
               dynamic_ncols=True, leave=True)
    in_update = False
    last_saved = step
    try:
        if step == 0 and not evals:
            run_eval()
            eval_before = evals[-1]["loss"] if evals else None
            report("training", None)
        while step < total_steps and not stopped_early:
            batches = plan_batches(train_split.lengths, config.batch_tokens, config.seed, epoch)
            while batch_index < len(batches) and step < total_steps:
                t0 = time.perf_counter()
                batch = _collate(train_split, batches[batch_index], pad_id, device)
                loss_sum = _loss_sum(parts, batch, config.bf16)
                loss = loss_sum / max(batch.targets, 1)
                loss.backward()
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm, foreach=True)
                in_update = True
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                batch_index += 1
                seconds = time.perf_counter() - t0
                value = float(loss.detach())
                history.append({"step": step, "loss": value, "lr": scheduler.get_last_lr()[0],
                                "tokens": batch.tokens, "targets": batch.targets, "seconds": seconds})
                in_update = False
                if not math.isfinite(value):
                    raise TrainingError(f"training diverged at step {step} (loss {value}); lower learning_rate")
                evaluated = False
                if step % eval_every == 0 and step < total_steps:
                    stopped_early = run_eval()
                    evaluated = True
                if evaluated or step % config.checkpoint_every == 0:
                    save_checkpoint()
                    last_saved = step
                bar.update(1)
                postfix = {"loss": f"{value:.3f}", "tok/s": f"{batch.tokens / seconds:.0f}"}
                if evals:
                    postfix["eval"] = f"{evals[-1]['loss']:.3f}"
                bar.set_postfix(postfix, refresh=False)
                report("training", value)
                if stopped_early:
                    break
            if batch_index >= len(batches):
                epoch += 1
                batch_index = 0
        if not evals or evals[-1]["step"] != step:
            run_eval()
        save_checkpoint()
    except KeyboardInterrupt:
        if not in_update and step > last_saved:
            with contextlib.suppress(Exception):
                save_checkpoint()
        raise
    finally:
        bar.close()

    if best_state is not None:
        _load_trainable(model, best_state)
    report("trained", history[-1]["loss"] if history else None)

    last_epoch = history[-steps_per_epoch:] if history else []
    targets = sum(h["targets"] for h in last_epoch)
    train_loss = sum(h["loss"] * h["targets"] for h in last_epoch) / targets if targets else None
    return TrainOutcome(
        model=model,
        tokenizer=tokenizer,
        config=config,
        base=base,
        steps=step,
        total_steps=total_steps,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        stopped_early=stopped_early,
        best_step=best_step if best_state is not None else step,
        train_loss=train_loss,
        eval_loss_before=eval_before,
        eval_loss_after=best_loss,
        history=history,
        evals=evals,
        tokens={
            "train_examples": len(train_split),
            "heldout_examples": len(heldout_split),
            "train_tokens": train_split.tokens,
            "train_target_tokens": train_split.target_tokens,
            "heldout_tokens": heldout_split.tokens,
            "heldout_target_tokens": heldout_split.target_tokens,
            "seen_tokens": sum(int(h["tokens"]) for h in history),
            "seen_target_tokens": sum(int(h["targets"]) for h in history),
            "truncated_examples": train_split.truncated + heldout_split.truncated,
            "skipped_examples": train_split.skipped + heldout_split.skipped,
        },
        duration_s=time.perf_counter() - started,
        train_seconds=sum(h["seconds"] for h in history),
        resumed_from=resumed_from,
    )


def _check_resumable(state: Mapping[str, Any], base: BaseModel, meta: Mapping[str, Any], path: Path) -> None:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: checkpoint from another version of the trainer; train without resume")
    saved = state["meta"]
    check_same_base(
        AdapterMetadata(base_model=saved["base_model"], base_hash=saved["base_hash"]), base.hash, base.id, path
    )
    if saved["data"] != meta["data"]:
        raise TrainingError(f"{path}: the examples changed since this checkpoint; train without resume to start over")
    if saved["config"] != meta["config"]:
        changed = sorted(k for k in meta["config"] if saved["config"].get(k) != meta["config"][k])
        raise TrainingError(
            f"{path}: settings changed since this checkpoint ({', '.join(changed)}); train without resume to start over"
        )
