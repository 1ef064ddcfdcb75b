"""One training job in its own process: ``python -m training.job <job id>`` (started by the worker).

The work is the runner's (:func:`training.runner.run_job`, the same for every way a run starts):
train the job's persona, publish the new version beside the live one, let the fidelity gate decide
whether it goes live, and write the outcome, progress and events into the job record. Errors in the
data or settings end the job ``failed`` with the reason; anything else ends the process and the
worker records how it died. A cancel reaches it as SIGTERM from the worker: the run stops where it is
and the persona's live version stays what it was.
"""

from __future__ import annotations

import signal
import sys

from store.jobs import Job
from store.settings import WorkerSettings

from .runner import Stopped, run_job

__all__ = ["JobSettings", "Stopped", "main", "run"]

JobSettings = WorkerSettings
"""What a training process receives from the worker (its ``to_env``), read back from ``PERSONA_*``."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped()


def run(settings: JobSettings, job_id: str) -> Job:
    """Run one job in this process (:func:`training.runner.run_job`)."""
    return run_job(settings, job_id)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m training.job <job id>", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_stopped)
    job = run(JobSettings(), args[0])
    return 0 if job.status in ("succeeded", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
