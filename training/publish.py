"""Publishing a trained adapter as the persona's next version, atomically.

The adapter is written into a staging folder beside the versions (``adapters/.staging-*``) together
with ``metadata.json``, ``loss.png`` and ``report.md``; it is checked against the server's LoRA limits
(rank, target modules, no ``modules_to_save``) and loaded once with PEFT onto a fresh base model to
prove that it loads and carries the trained weights. Only then is the folder renamed to ``vN`` and the
``LIVE`` pointer swapped (:func:`store.adapters.publish`). Any failure, Ctrl-C included, removes the
staging folder and leaves the previous version live.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from store import adapters
from store.adapters import AdapterMetadata, LoraShape
from store.base_model import BaseModel
from store.errors import StoreError

from .config import TrainingError
from .result import TrainResult

__all__ = ["publish_adapter", "write_loss_plot", "write_report", "build_metadata", "verify_loads"]

LOSS_PLOT = "loss.png"
REPORT = "report.md"


def build_metadata(outcome: TrainResult, data_hash: str, extra: dict[str, Any] | None = None) -> AdapterMetadata:
    """``metadata.json`` of the new version: base, data, settings and the figures of the run."""
    config = outcome.config
    return AdapterMetadata(
        base_model=outcome.base.id,
        base_hash=outcome.base.hash,
        data_hash=data_hash,
        lora=LoraShape(r=config.lora_r, alpha=config.lora_alpha, target_modules=sorted(config.target_modules)),
        settings=config.to_dict(),
        train_loss=_round(outcome.train_loss),
        eval_loss_before=_round(outcome.eval_loss_before),
        eval_loss_after=_round(outcome.eval_loss_after),
        tokens=dict(outcome.tokens),
        examples=outcome.examples,
        duration_s=round(outcome.duration_s, 1),
        steps=outcome.steps,
        epochs=outcome.epochs,
        steps_per_epoch=outcome.steps_per_epoch,
        best_step=outcome.best_step,
        stopped_early=outcome.stopped_early,
        tokens_per_s=round(outcome.tokens_per_s, 1),
        evals=[{"step": int(e["step"]), "loss": round(e["loss"], 5)} for e in outcome.evals],
        peak_rss_mb=outcome.peak_rss_mb,
        peak_cuda_mb=outcome.peak_cuda_mb,
        resumed_from=outcome.resumed_from,
        **(extra or {}),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 5)


def write_loss_plot(outcome: TrainResult, path: Path) -> None:
    """Training loss per step (and its running mean) with the held-out loss at each evaluation."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.subplots()
    steps = [h["step"] for h in outcome.history]
    losses = [h["loss"] for h in outcome.history]
    if steps:
        window = max(1, min(10, len(losses) // 5))
        axes.plot(
            steps,
            losses,
            color="#9bb7d4" if window > 1 else "#1f5f9e",
            linewidth=1 if window > 1 else 2,
            label="train loss (per step)",
        )
        if window > 1:
            smooth = [
                sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
                for i in range(len(losses))
            ]
            axes.plot(steps, smooth, color="#1f5f9e", linewidth=2, label=f"train loss (mean of {window} steps)")
    if outcome.evals:
        axes.plot(
            [e["step"] for e in outcome.evals],
            [e["loss"] for e in outcome.evals],
            "o-",
            color="#d45f1f",
            label="held-out loss",
        )
        if outcome.best_step is not None:
            best = [e for e in outcome.evals if e["step"] == outcome.best_step]
            if best:
                axes.plot([best[0]["step"]], [best[0]["loss"]], "*", markersize=14, color="#d45f1f", label="published")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (cross-entropy per persona token)")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path)


def write_report(outcome: TrainResult, metadata: AdapterMetadata, persona: str, path: Path) -> None:
    """A short human-readable ``report.md``."""

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    tokens = outcome.tokens
    lines = [
        f"# {persona}: adapter report",
        "",
        f"- Base model: `{metadata.base_model}` (hash `{metadata.base_hash[:12]}`)",
        f"- Data: {tokens.get('train_examples', 0)} training and {tokens.get('heldout_examples', 0)} held-out "
        f"examples, hash `{metadata.data_hash[:12]}`" + _origins(outcome),
        f"- LoRA: r={outcome.config.lora_r}, alpha={outcome.config.lora_alpha:g}, "
        f"modules {', '.join(sorted(outcome.config.target_modules))}"
        + (" (QLoRA, 4-bit base)" if outcome.config.qlora else ""),
        f"- Run: {outcome.steps} steps = {outcome.steps / outcome.steps_per_epoch:.2g} epoch(s) of "
        f"{outcome.steps_per_epoch} steps ("
        + (f"{outcome.epochs} planned" if outcome.config.epochs else "passes chosen by the held-out loss")
        + (f", max_steps {outcome.config.max_steps}" if outcome.config.max_steps else "")
        + (", stopped early on the held-out loss" if outcome.stopped_early else "")
        + (
            f", stopped by the time budget of {outcome.config.time_budget_s:.0f} s"
            if outcome.stop_reason == "time budget"
            else ""
        )
        + (f", resumed at step {outcome.resumed_from}" if outcome.resumed_from else "")
        + ")",
        f"- Time: {outcome.duration_s:.0f} s, {outcome.tokens_per_s:.0f} training tokens/s",
        f"- Peak memory: {_mb(outcome.peak_rss_mb)} resident"
        + (f", {_mb(outcome.peak_cuda_mb)} CUDA" if outcome.peak_cuda_mb is not None else ""),
        "",
        "| held-out loss | value | perplexity |",
        "|---|---|---|",
    ]
    for label, value in (
        ("base model (before)", outcome.eval_loss_before),
        (f"published adapter (step {outcome.best_step})", outcome.eval_loss_after),
    ):
        ppl = "n/a" if value is None else f"{_exp(value):.2f}"
        lines.append(f"| {label} | {fmt(value)} | {ppl} |")
    lines += [
        "",
        f"Training loss over the last epoch's steps: {fmt(outcome.train_loss)}.",
        f"Tokens: {tokens.get('train_tokens', 0)} per epoch, of which {tokens.get('train_target_tokens', 0)} "
        f"are the persona's; {tokens.get('truncated_examples', 0)} example(s) were shortened to "
        f"{outcome.config.max_seq_length} tokens.",
        "",
        f"![loss]({LOSS_PLOT})",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def _origins(outcome: TrainResult) -> str:
    """Where the training examples came from, for the report (nothing when the run was not told)."""
    counts = outcome.examples
    if counts is None:
        return ""
    weight = outcome.config.synthetic_weight
    return (
        f"; training on {counts.real} real, {counts.synthetic} generated (weight {weight:g}) and "
        f"{counts.replay} general-conversation (replay) examples"
    )


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MiB"


def _exp(value: float) -> float:
    import math

    return math.exp(min(value, 50.0))


def _lora_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LoRA weights keyed by their module path, independent of PEFT's adapter-name infixes."""
    out = {}
    for key, value in state.items():
        if "lora_" not in key:
            continue
        key = key.replace(".default", "")
        key = key[key.index("model.") :] if "model." in key else key
        out[key.removesuffix(".weight")] = value
    return out


def verify_loads(staged: Path, base: BaseModel, expected: dict[str, torch.Tensor] | None = None) -> None:
    """Load the staged adapter with PEFT onto a fresh copy of the base; compare the weights."""
    from .model import load_adapter_model

    loaded = load_adapter_model(base, staged)
    got = _lora_tensors({k: v.cpu() for k, v in loaded.state_dict().items()})
    if not got:
        raise TrainingError(f"{staged}: the adapter loaded without any LoRA weights")
    if expected is not None:
        want = _lora_tensors(expected)
        if set(want) != set(got):
            raise TrainingError(f"{staged}: the saved adapter has different modules than the trained one")
        for key, value in want.items():
            if not torch.equal(value.to(got[key].dtype), got[key]):
                raise TrainingError(f"{staged}: weights of {key} differ from the trained adapter after loading")
    del loaded


def publish_adapter(
    persona_path: Path,
    outcome: TrainResult,
    *,
    data_hash: str,
    max_lora_rank: int,
    allowed_modules: set[str] | None = None,
    persona_name: str | None = None,
    make_live: bool = True,
    extra_metadata: dict[str, Any] | None = None,
) -> tuple[int, Path]:
    """Write, check and publish ``outcome``'s adapter as the next version; returns (number, folder).

    Raises :class:`TrainingError` (or :class:`store.errors.StoreError` from the checks) with the
    staging folder removed and the live version unchanged.
    """
    staged = adapters.new_staging_dir(persona_path)
    try:
        model = outcome.model
        config = getattr(model, "peft_config", {}).get("default")
        if config is not None and getattr(config, "modules_to_save", None):
            raise TrainingError(f"the adapter has modules_to_save {config.modules_to_save}; the server cannot load it")
        model.save_pretrained(staged, save_embedding_layers=False)
        adapters.store_weights(staged)
        trained = {k: adapters.as_stored(v.detach().cpu()) for k, v in model.state_dict().items() if "lora_" in k}
        metadata = build_metadata(outcome, data_hash, extra_metadata)
        (staged / adapters.METADATA_FILE).write_text(metadata.model_dump_json(indent=2), encoding="utf-8")
        write_loss_plot(outcome, staged / LOSS_PLOT)
        write_report(outcome, metadata, persona_name or persona_path.name, staged / REPORT)
        adapters.check_servable(staged, max_lora_rank, allowed_modules)
        verify_loads(staged, outcome.base, trained)
        version = adapters.publish(persona_path, staged, make_live=make_live)
    except BaseException as exc:
        shutil.rmtree(staged, ignore_errors=True)
        if isinstance(exc, (StoreError, TrainingError, KeyboardInterrupt)) or not isinstance(exc, Exception):
            raise
        raise TrainingError(f"publishing failed, the live version is unchanged: {exc}") from exc
    return version, adapters.version_dir(persona_path, version)
