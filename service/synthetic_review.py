"""The review of a persona's synthetic examples, shared by the API and the page: examples listed a
batch at a time with counts by state, and a batch settled in one go. One example is reviewed with
:func:`store.synthetic.review` itself.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from store import synthetic
from store.registry import Persona
from store.synthetic import Status, SyntheticExample

from .errors import APIError

Decision = Literal["accepted", "rejected"]


class BatchCounts(BaseModel):
    batch: int
    pending: int = 0
    accepted: int = 0
    rejected: int = 0


class SyntheticList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SyntheticExample]
    batches: list[BatchCounts] = Field(description="Every batch of the persona with its examples by review state.")


class ReviewRequest(BaseModel):
    status: Decision = Field(description="'accepted' to train on the example, 'rejected' to leave it out.")
    reply: str | None = Field(default=None, description="An edited reply, kept in place of the generated one.")
    reason: str | None = Field(default=None, description="Why it was rejected, kept with the example.")


class BatchReviewRequest(BaseModel):
    status: Decision = Field(description="The state given to every example of the batch still pending.")
    reason: str | None = None


def batch_counts(persona: Persona) -> list[BatchCounts]:
    counts = []
    for number in synthetic.batches(persona.path):
        row = BatchCounts(batch=number)
        for example in synthetic.read_batch(persona.path, number):
            setattr(row, example.status, getattr(row, example.status) + 1)
        counts.append(row)
    return counts


def listing(persona: Persona, status: Status | None = None, batch: int | None = None) -> SyntheticList:
    """The persona's examples, oldest batch first, optionally of one state or one batch."""
    examples = [
        example
        for example in synthetic.all_examples(persona.path)
        if (status is None or example.status == status) and (batch is None or example.batch == batch)
    ]
    return SyntheticList(data=examples, batches=batch_counts(persona))


def settle_batch(persona: Persona, batch: int, status: Decision, reason: str | None = None) -> list[SyntheticExample]:
    """Give every pending example of ``batch`` the same state; the ones already reviewed keep theirs."""
    if batch not in synthetic.batches(persona.path):
        raise APIError(404, f"{persona.name} has no synthetic batch {batch}", "invalid_request_error", "batch", None)
    changed = []
    for example in synthetic.read_batch(persona.path, batch):
        if example.status == "pending":
            changed.append(synthetic.review(persona.path, example.id, status, reason=reason))
    return changed
