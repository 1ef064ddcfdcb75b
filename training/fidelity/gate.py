"""The gate: a new version goes live only if it is not worse than the live one.

"Not worse" is measured on the adapter's held-out perplexity, its identity through held-out
conversations (is it the character speaking, turn by turn) and its style similarity to the real
replies (centroid cosine), each within a tolerance from the persona's ``fidelity.gate`` settings, and
optionally on forgetting. A figure that the persona's data cannot give (missing from both reports,
with the reason in the report) is listed as not taken; perplexity is never optional. A version
that fails stays available, marked ``held back`` with the reasons
and both sets of figures, for inspection and manual promotion.
"""

from __future__ import annotations

from store.fidelity_report import FidelityReport, GateCheck, GateDecision

from .settings import FidelityError, GateThresholds

__all__ = ["TooSmallToJudge", "check_reason", "comparable", "decide"]


class TooSmallToJudge(FidelityError):
    """The persona's held-out data is too small to judge a version on (too few held-out sessions or
    prompts): a version then goes live marked ``unjudged``. Any other failure of an evaluation holds
    the version back."""


def _perplexity_check(new: FidelityReport, live: FidelityReport, tolerance: float) -> GateCheck | str:
    value, reference = new.systems.adapter.perplexity, live.systems.adapter.perplexity
    if value is None or reference is None:
        return "held-out perplexity is missing from a report"
    limit = reference * (1.0 + tolerance)
    return GateCheck(figure="perplexity", new=value, live=reference, limit=limit, passed=value <= limit)


def _similarity_check(new: FidelityReport, live: FidelityReport, tolerance: float) -> GateCheck | str | None:
    value, reference = new.systems.adapter.centroid_similarity, live.systems.adapter.centroid_similarity
    if value is None and reference is None:
        return None
    if value is None or reference is None:
        return "style similarity is missing from a report"
    limit = reference - tolerance
    return GateCheck(figure="centroid_similarity", new=value, live=reference, limit=limit, passed=value >= limit)


def _identity_check(new: FidelityReport, live: FidelityReport, tolerance: float) -> GateCheck | str | None:
    if new.identity is None and live.identity is None:
        return None
    if new.identity is None or live.identity is None:
        return "identity is missing from a report"
    value, reference = new.identity.systems["adapter"].mean, live.identity.systems["adapter"].mean
    limit = reference - tolerance
    return GateCheck(figure="identity", new=value, live=reference, limit=limit, passed=value >= limit)


def _forgetting_check(new: FidelityReport, live: FidelityReport, most: float) -> GateCheck | str:
    if new.forgetting is None:
        return "forgetting is missing from the new report"
    return GateCheck(
        figure="forgetting", new=new.forgetting, live=live.forgetting or 0.0, limit=most, passed=new.forgetting <= most
    )


def check_reason(check: GateCheck, live_version: str) -> str:
    """Why a failed check holds a version back, in words."""
    if check.figure == "card_perplexity":
        return (
            f"held-out perplexity {check.new:.2f} is worse than the prompt-only persona's {check.live:.2f} "
            f"beyond the tolerance (at most {check.limit:.2f})"
        )
    if check.figure == "perplexity":
        return (
            f"held-out perplexity {check.new:.2f} is worse than live {live_version}'s {check.live:.2f} "
            f"beyond the tolerance (at most {check.limit:.2f})"
        )
    if check.figure == "identity":
        return (
            f"identity through held-out conversations {check.new:.3f} is below live {live_version}'s "
            f"{check.live:.3f} beyond the tolerance (at least {check.limit:.3f})"
        )
    if check.figure == "centroid_similarity":
        return (
            f"style similarity {check.new:.3f} is below live {live_version}'s {check.live:.3f} "
            f"beyond the tolerance (at least {check.limit:.3f})"
        )
    return f"forgetting {check.new:+.1%} is above the allowed {check.limit:.1%} on general conversation"


def comparable(new: FidelityReport, live: FidelityReport) -> str | None:
    """Why two reports cannot be compared (other persona, data, base model, card or settings), else ``None``."""
    if new.persona != live.persona:
        return f"they are of different personas ('{new.persona}', '{live.persona}')"
    if new.data_hash != live.data_hash:
        return f"they were measured on different held-out data ({new.data_hash[:12]} vs {live.data_hash[:12]})"
    if new.base_model != live.base_model:
        return f"they were measured on different base models ({new.base_model}, {live.base_model})"
    if new.card_prompt != live.card_prompt:
        return "the card changed between them"
    ours, theirs = ({k: v for k, v in r.settings.items() if k != "gate"} for r in (new, live))
    if ours != theirs:
        return "they were measured with different fidelity settings"
    return None


def decide(new: FidelityReport, live: FidelityReport | None, thresholds: GateThresholds) -> GateDecision:
    """Go live, or be held back with reasons. ``live`` is the live version's report (``None``: none).

    Both reports must be measured the same way (:func:`comparable`); otherwise the live version has to
    be evaluated again first, and :class:`FidelityError` says so.
    """
    not_taken = [f"{figure}: {why}" for figure, why in new.missing.items()]
    if live is None:
        return GateDecision(go_live=True, status="live", reasons=["no live version to compare with"], missing=not_taken)
    problem = comparable(new, live)
    if problem is not None:
        raise FidelityError(
            f"cannot compare {new.version} with {live.version}: {problem}; evaluate {live.version} again the same way"
        )
    outcomes = [
        _perplexity_check(new, live, thresholds.max_perplexity_increase),
        _identity_check(new, live, thresholds.max_identity_drop),
        _similarity_check(new, live, thresholds.max_similarity_drop),
    ]
    if thresholds.max_forgetting is not None:
        outcomes.append(_forgetting_check(new, live, thresholds.max_forgetting))
    checks = [o for o in outcomes if isinstance(o, GateCheck)]
    reasons = [o for o in outcomes if isinstance(o, str)]
    reasons += [check_reason(c, live.version) for c in checks if not c.passed]
    go = not reasons
    return GateDecision(
        go_live=go,
        status="live" if go else "held back",
        compared_with=live.version,
        reasons=reasons,
        checks=checks,
        missing=not_taken,
    )
