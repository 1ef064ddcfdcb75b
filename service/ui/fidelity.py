"""The version's fidelity figures beside the page's version picker: does this adapter keep the voice
better than the base model with the persona's card? The full report (JSON, Markdown, chart) stays
beside the version in the store; the page shows its headline and the gate's decision.
"""

from __future__ import annotations

from ..personas.protocol import FidelitySummary, PersonaStatus, VersionStatus
from .session import LIVE

SYSTEMS = (("base", "base"), ("card", "card only"), ("adapter", "adapter"), ("real", "real"))
COLUMNS = "| | perplexity ↓ | style ↑ | identity ↑ |"
KEY = (
    "perplexity: of the real held-out replies; style: similarity to them; identity: is it the character "
    "speaking, turn by turn through held-out talks (drift: last turns minus first)."
)


def _figure(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _identity(report: FidelitySummary, key: str) -> str:
    value, drift = report.identity.get(key), report.identity_drift.get(key)
    if value is None:
        return "–"
    return f"{value:.2f}" + ("" if drift is None else f" ({drift:+.2f})")


def _rows(report: FidelitySummary) -> list[str]:
    """One row per system with three short columns, so the table stays readable in a narrow column."""
    rows = []
    for key, label in SYSTEMS:
        cells = [_figure(report.perplexity.get(key), 1), _figure(report.centroid_similarity.get(key), 2)]
        cells.append(_identity(report, key))
        if any(c != "–" for c in cells):
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def shown_version(status: PersonaStatus | None, picked: str | None) -> VersionStatus | None:
    """The version the picker names: the live one for 'live', else that version."""
    if status is None:
        return None
    wanted = status.live_version if picked in (None, LIVE) else picked
    return next((v for v in status.versions if v.version == wanted), None)


def gate_line(version: VersionStatus) -> str:
    """The gate's word on a version, never left out when it went live unjudged or was held back."""
    gate = version.gate
    if gate is None:
        said = version.fidelity.gate if version.fidelity else None
        return "held back by the fidelity gate" if version.held_back else (said or "")
    if gate.status == "unjudged":
        return "unjudged: live without a fidelity verdict"
    if gate.provisional and gate.compared_with is None:
        return "live (nothing to compare it with yet); its report is being measured"
    if gate.provisional:
        return f"live on its held-out perplexity against {gate.compared_with}; the rest of its report is being measured"
    if gate.status == "held back":
        said = "held back: its evaluation failed" if gate.error else "held back by the fidelity gate"
        return said + (", made live by hand" if version.live else "")
    return "live, forced past the gate" if gate.forced else "live"


def gate_details(version: VersionStatus) -> list[str]:
    """The gate's reasons, the evaluation's error and the figures it could not take, one bullet each."""
    gate = version.gate
    if gate is None:
        return [f"- {reason}" for reason in version.fidelity.reasons] if version.fidelity else []
    lines = [f"- {reason}" for reason in gate.reasons]
    lines += [f"- evaluation failed: {gate.error}"] if gate.error else []
    label = "not measured yet" if gate.provisional else "not measured"
    lines += [f"- {label}: {figure}" for figure in gate.missing]
    return lines


def fidelity_markdown(status: PersonaStatus | None, picked: str | None) -> str:
    """A small table of the picked version's report with the gate's decision; the decision alone for a
    version with no report (its evaluation failed or could not be run); '' when there is neither (a card
    persona, or an adapter published before either was recorded)."""
    version = shown_version(status, picked)
    if version is None or (version.fidelity is None and version.gate is None):
        return ""
    decision = gate_line(version)
    if version.fidelity is None:
        return "\n".join([f"**{version.version}** · {decision}", "", *gate_details(version)]).strip()
    report = version.fidelity
    lines = [
        f"**{version.version} against the card alone**" + (f" · {decision}" if decision else ""),
        "",
        COLUMNS,
        "| --- | ---: | ---: | ---: |",
        *_rows(report),
        "",
        f"<small>{KEY}</small>",
    ]
    lines += gate_details(version)
    return "\n".join(lines)
