"""Reviewing a persona's synthetic examples over HTTP: list them a batch at a time, accept, edit or
reject one, or settle what is left of a batch.

The examples live in ``personas/<name>/synthetic/`` (:mod:`store.synthetic`); ``persona review`` and
the page's review tab change the same files, and only accepted examples are trained on.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from store import synthetic
from store.registry import Persona
from store.synthetic import Status, SyntheticExample

from .auth import require_key
from .errors import APIError, bad_request
from .openapi import error_responses
from .personas.actions import get_persona
from .store_changes import marks_changes
from .synthetic_review import BatchReviewRequest, ReviewRequest, SyntheticList, listing, settle_batch

router = APIRouter(
    prefix="/v1/personas",
    dependencies=[Depends(require_key), Depends(marks_changes)],
    tags=["synthetic examples"],
    responses=error_responses(400, 401, 404, 409),
)


def persona_of(request: Request, name: str) -> Persona:
    return get_persona(request.app.state.store, name)


@router.get("/{name}/synthetic", response_model=SyntheticList)
async def list_synthetic(
    request: Request,
    name: str,
    status: Status | None = Query(default=None, description="Only examples in this review state."),
    batch: int | None = Query(default=None, ge=0, description="Only the examples of this batch."),
) -> SyntheticList:
    """The persona's generated examples and their review state."""
    return listing(persona_of(request, name), status, batch)


@router.patch("/{name}/synthetic/{example_id}", response_model=SyntheticExample)
async def review_example(request: Request, name: str, example_id: str, body: ReviewRequest) -> SyntheticExample:
    """Accept (optionally with an edited reply) or reject one example."""
    persona = persona_of(request, name)
    if body.reply is not None and not body.reply.strip():
        raise bad_request("reply: an edited reply cannot be empty", "reply", "invalid_value")
    try:
        return synthetic.review(persona.path, example_id, body.status, reply=body.reply, reason=body.reason)
    except KeyError:
        raise APIError(
            404, f"{name} has no synthetic example {example_id}", "invalid_request_error", "example_id", None
        ) from None


@router.post("/{name}/synthetic/batches/{batch}", response_model=SyntheticList)
async def review_batch(request: Request, name: str, batch: int, body: BatchReviewRequest) -> SyntheticList:
    """Accept or reject what is still pending in a batch; answers with that batch."""
    persona = persona_of(request, name)
    settle_batch(persona, batch, body.status, body.reason)
    return listing(persona, batch=batch)
