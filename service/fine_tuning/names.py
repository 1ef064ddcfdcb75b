"""OpenAI-style fine-tuned model names, ``ft:<base>:persona:<persona>:<job>``, and what they serve.

A job that publishes version N of persona ``nova`` answers to ``ft:SmolLM2-135M-Instruct:persona:
nova:<8 characters of the job id>``; that name always serves version N (like ``nova@vN``), while
``nova`` serves whichever version is live.
"""

from __future__ import annotations

from store.errors import StoreError
from store.jobs import Job, JobStore
from store.names import NAME_PATTERN, version_name

ORGANIZATION = "persona"


def fine_tuned_model(job: Job, base_id: str) -> str | None:
    """The model name a succeeded job gives its version; None before it has one."""
    if job.status != "succeeded" or job.version is None:
        return None
    if job.source != "api":
        return f"{job.persona}@{version_name(job.version)}"
    return f"ft:{base_id}:{ORGANIZATION}:{job.persona}:{job.id[6:14]}"


def resolve_fine_tuned(model: str, jobs: JobStore) -> str | None:
    """``name@vN`` for an ``ft:`` name of a succeeded job, or None when ``model`` is not one."""
    parts = model.split(":")
    if len(parts) != 5 or parts[0] != "ft" or parts[2] != ORGANIZATION or not NAME_PATTERN.fullmatch(parts[3]):
        return None
    persona, short = parts[3], parts[4]
    try:
        candidates = jobs.for_persona(persona)
    except StoreError:
        return None
    for job in candidates:
        if job.id[6:14] == short and job.version is not None and job.status == "succeeded":
            return f"{persona}@{version_name(job.version)}"
    return None
