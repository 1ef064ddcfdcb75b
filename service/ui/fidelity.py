"""The version's fidelity figures beside the page's version picker: does this adapter keep the voice
better than the base model with the persona's card? The full report (JSON, Markdown, chart) stays
beside the version in the store; the page shows its headline and the gate's decision.
"""

from __future__ import annotations

from ..personas.protocol import PersonaStatus, VersionStatus
from .session import LIVE

SYSTEMS = (("base", "base model"), ("card", "card only"), ("adapter", "adapter"))


def _figure(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _row(label: str, figures: dict[str, float | None], digits: int) -> str:
    return f"| {label} | " + " | ".join(_figure(figures.get(key), digits) for key, _ in SYSTEMS) + " |"


def shown_version(status: PersonaStatus | None, picked: str | None) -> VersionStatus | None:
    """The version the picker names: the live one for 'live', else that version."""
    if status is None:
        return None
    wanted = status.live_version if picked in (None, LIVE) else picked
    return next((v for v in status.versions if v.version == wanted), None)


def fidelity_markdown(status: PersonaStatus | None, picked: str | None) -> str:
    """A small table of the picked version's report, or '' when it has none (a card persona, an
    adapter published before reports, or one published without its report)."""
    version = shown_version(status, picked)
    if version is None or version.fidelity is None:
        return ""
    report = version.fidelity
    decision = "held back by the fidelity gate" if version.held_back else (report.gate or "")
    lines = [
        f"**{version.version} against the card alone**" + (f" · {decision}" if decision else ""),
        "",
        "| | " + " | ".join(label for _, label in SYSTEMS) + " |",
        "| --- | --- | --- | --- |",
        _row("held-out perplexity (lower is closer)", report.perplexity, 1),
        _row("style similarity (higher is closer)", report.centroid_similarity, 2),
        _row("variation across sessions (lower is steadier)", report.session_variation, 2),
    ]
    lines += [f"- {reason}" for reason in report.reasons]
    return "\n".join(lines)
