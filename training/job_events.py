"""What a running job writes into its record: progress and heartbeat, a metrics event per reported
step (as OpenAI's jobs list them), and the last events of a run."""

from __future__ import annotations

import time

from store.fidelity_report import GateDecision
from store.jobs import JobStore, this_process
from store.progress import TrainingProgress

from .result import TrainResult

__all__ = ["log_result", "progress_writer"]


def progress_writer(jobs: JobStore, job_id: str):
    """An ``on_step`` callback that keeps the job's progress and heartbeat current (at most 1/s), and
    adds a metrics event per reported step."""
    last = {"at": 0.0, "step": 0}

    def on_step(info: TrainingProgress) -> None:
        now = time.monotonic()
        if now - last["at"] < 1.0 and info.step < info.total_steps:
            return
        last["at"] = now
        jobs.update(job_id, progress=info, **this_process())
        if info.step > last["step"]:
            last["step"] = info.step
            jobs.log(job_id, _step_message(info), data=_step_metrics(info))

    return on_step


def _step_message(info: TrainingProgress) -> str:
    losses = [f"training loss={info.train_loss:.4f}"] if info.train_loss is not None else []
    if info.eval_loss is not None:
        losses.append(f"validation loss={info.eval_loss:.4f}")
    return f"Step {info.step}/{info.total_steps}" + (": " + ", ".join(losses) if losses else "")


def _step_metrics(info: TrainingProgress) -> dict[str, float | int]:
    metrics: dict[str, float | int] = {"step": info.step, "total_steps": info.total_steps}
    if info.train_loss is not None:
        metrics["train_loss"] = info.train_loss
    if info.eval_loss is not None:
        metrics["valid_loss"] = info.eval_loss
    return metrics


def log_result(jobs: JobStore, job_id: str, result: TrainResult, decision: GateDecision, state: str) -> None:
    """The job's last events: the held-out loss before and after training, the gate, what was published."""
    if result.eval_loss_before is not None and result.eval_loss_after is not None:
        jobs.log(
            job_id,
            f"Held-out loss {result.eval_loss_before:.4f} before training, {result.eval_loss_after:.4f} after",
            data={
                "step": result.steps,
                "valid_loss": result.eval_loss_after,
                "valid_loss_before": result.eval_loss_before,
            },
        )
    if decision.error:
        jobs.log(job_id, f"The evaluation of v{result.version} failed: {decision.error}", level="error")
    for missing in decision.missing:
        jobs.log(job_id, f"Not measured: {missing}", level="warn")
    reasons = decision.reasons + (["forced live"] if decision.forced else [])
    jobs.log(
        job_id,
        f"{state} v{result.version}" + (f": {'; '.join(reasons)}" if reasons else ""),
        data={"step": result.steps, "train_loss": result.train_loss, "valid_loss": result.eval_loss_after},
    )
