"""The gate's decision on a newly published version, recorded in its ``gate.json``; it fails closed.

    decision = judge_version(settings, persona, 4, examples, eval_url=url, force=False)

With a server to evaluate through, the whole fidelity report is measured and :func:`.gate.decide`
compares it with the live version's. Without one, the version is judged in this process on what can
be measured without generating replies: held-out perplexity of the new adapter against the live
version's and against the prompt-only persona (base model + full card); the figures it could not take
are listed in ``missing``.

A shorter in-process decision comes first where there is a server (``first``): the runner makes a
version live on it and the whole report follows (:func:`training.runner.run_job`).

An evaluation that raises holds the version back with the error recorded: a crash never leaves a
version live. The one exception is :class:`.gate.TooSmallToJudge` (too few held-out sessions): the
version goes live marked ``unjudged`` with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

from store.fidelity_report import GateCheck, GateDecision, write_gate
from store.names import version_name
from store.registry import Persona
from store.settings import StoreSettings

from ..ingest import ExampleSet
from .evaluate import Evaluation
from .gate import TooSmallToJudge, check_reason
from .perplexity import Scorer
from .settings import FidelitySettings

__all__ = ["NOT_MEASURED_HERE", "judge_version", "perplexity_decision"]

NOT_MEASURED_HERE = (
    "identity",
    "style similarity",
    "classifier accuracy",
    "session variation",
    "voice markers",
    "forgetting",
)
"""Figures that need replies generated through a server: the in-process gate cannot take them."""


def judge_version(
    settings: StoreSettings,
    persona: Persona,
    version: int,
    examples: ExampleSet,
    *,
    eval_url: str | None,
    force: bool = False,
    first: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> GateDecision:
    """Decide whether ``version`` may go live and write the decision beside it (``gate.json``).

    ``persona`` is read after the version was published (its ``live`` is the version to compare
    with). ``force`` makes it live whatever the figures say, marked ``forced``. ``first``: the
    decision on held-out perplexity alone that comes before the whole report through ``eval_url``
    (``provisional`` when it lets the version go live). Never raises for a failed evaluation: the
    decision is then ``held back`` with ``error`` set.
    """
    try:
        if first:
            decision = perplexity_decision(settings, persona, version, examples, pending=True)
            decision = decision.model_copy(update={"provisional": decision.status == "live"})
        elif eval_url is None:
            decision = perplexity_decision(settings, persona, version, examples)
        else:
            evaluation = Evaluation.prepare(settings, persona, say=say, examples=examples)
            decision = evaluation.gate(version, eval_url).gate or GateDecision(go_live=False, status="held back")
    except TooSmallToJudge as exc:
        decision = GateDecision(go_live=True, status="unjudged", reasons=[str(exc)])
    except Exception as exc:  # fail closed: whatever went wrong, the version is not made live
        error = f"{type(exc).__name__}: {exc}"
        decision = GateDecision(
            go_live=False, status="held back", error=error, reasons=[f"the evaluation failed: {error}"]
        )
    if force and not decision.go_live:
        decision = decision.model_copy(update={"go_live": True, "status": "live", "forced": True})
    elif force:
        decision = decision.model_copy(update={"forced": True})
    write_gate(persona.version_path(version), decision)
    return decision


def perplexity_decision(
    settings: StoreSettings,
    persona: Persona,
    version: int,
    examples: ExampleSet,
    fidelity: FidelitySettings | None = None,
    *,
    pending: bool = False,
) -> GateDecision:
    """The in-process gate: the new adapter's held-out perplexity may be at most the tolerance above
    the live version's (same base model), as with a server. The prompt-only persona's perplexity is
    measured and kept as a check beside it (``card_perplexity``), so a reader sees whether the adapter
    beats a well-written prompt; like the server's gate, it does not hold a first version back.

    ``pending``: the whole report is measured through a server next, and it holds every figure, so
    this decision measures only what can decide: a version with a live one on the same base model
    to compare with is scored against it, and a first version (nothing can hold it back) goes live
    at once, unscored, since every figure follows in the report."""
    evaluation = Evaluation.prepare(settings, persona, fidelity, examples=examples)  # TooSmallToJudge
    fidelity, plan, base = evaluation.fidelity, evaluation.plan, evaluation.base
    why = "in the report measured next through the server" if pending else "no server to generate replies through"
    missing = [f"{figure}: {why}" for figure in NOT_MEASURED_HERE]
    live, compared_with = (persona.live if persona.live != version else None), None
    if live is not None and persona.metadata(live).base_hash != base.hash:
        missing.append(f"perplexity against live {version_name(live)}: it was trained on another base model")
        live = None
    if pending and live is None:
        return GateDecision(
            go_live=True,
            status="live",
            reasons=["no live version to compare with"],
            missing=[f"perplexity: {why}", *missing],
        )
    as_served = plan.scored_as(persona.system_prompt)
    options = {"max_length": fidelity.max_length, "batch_size": fidelity.batch_size}
    scorer = Scorer.load(base.path, persona.version_path(version), **options)
    new = scorer.score(as_served, adapter=True).perplexity
    tolerance = fidelity.gate.max_perplexity_increase
    checks = []
    if not pending:
        card = scorer.score(plan.scored_as(evaluation.card_prompt), adapter=False).perplexity
        checks.append(_check("card_perplexity", new, card, tolerance))
    del scorer
    if live is not None:
        reference = Scorer.load(base.path, persona.version_path(live), **options)
        checks.append(_check("perplexity", new, reference.score(as_served, adapter=True).perplexity, tolerance))
        compared_with = version_name(live)
    reasons = [check_reason(c, compared_with or "") for c in checks if c.figure == "perplexity" and not c.passed]
    go = not reasons
    return GateDecision(
        go_live=go,
        status="live" if go else "held back",
        compared_with=compared_with,
        reasons=reasons,
        checks=checks,
        missing=missing,
    )


def _check(figure: str, new: float, reference: float, tolerance: float) -> GateCheck:
    limit = reference * (1.0 + tolerance)
    return GateCheck(figure=figure, new=new, live=reference, limit=limit, passed=new <= limit)
