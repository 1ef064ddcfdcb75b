"""Writing a fidelity report beside its version: ``fidelity.json``, ``fidelity.md``, ``fidelity.png`` and,
when the identity figures were taken, ``identity.png`` (identity by turn: card, adapter, real replies).

The JSON is the record (the gate and the API read it); the Markdown and the chart are for people.
Each file is replaced atomically, so a reader never sees half a report.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from store.fidelity_report import (
    FIDELITY_JSON,
    FIDELITY_MD,
    FIDELITY_PNG,
    IDENTITY_PNG,
    SYSTEMS,
    FidelityReport,
    SystemFigures,
)
from store.files import atomic_write

__all__ = ["FIGURES", "figure_table", "render_markdown", "render_png", "write_report"]

LABELS = {"base": "base model", "card": "prompt-only (full card)", "adapter": "adapter"}
COLOURS = {"base": "#9e9e9e", "card": "#e08a2c", "adapter": "#2c7be0"}

FIGURES: list[tuple[str, str, str, str]] = [
    # (field of SystemFigures, what it is, which way is better, number format)
    ("perplexity", "held-out perplexity of the real replies", "lower", "{:.1f}"),
    ("pair_similarity", "style similarity, pair by pair (cosine)", "higher", "{:.3f}"),
    ("centroid_similarity", "style similarity to the real replies' centroid", "higher", "{:.3f}"),
    ("classifier_accuracy", "classifier telling replies from real ones", "0.5", "{:.2f}"),
    ("session_variation", "what is said: variation across fresh sessions", "lower", "{:.3f}"),
    ("prompt_tokens", "prompt tokens per request", "lower", "{:.0f}"),
    ("marker_rate", "replies with a voice marker", "as real", "{:.0%}"),
    ("general_perplexity", "general-conversation perplexity (forgetting)", "lower", "{:.1f}"),
]


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def _real_column(report: FidelityReport, field: str) -> str:
    if field == "centroid_similarity":
        return f"{report.real.centroid_ceiling:.3f} (ceiling)"
    if field == "classifier_accuracy":
        return "0.50 (indistinguishable)"
    if field == "marker_rate" and report.real.marker_rate is not None:
        return f"{report.real.marker_rate:.0%}"
    return ""


def figure_table(report: FidelityReport) -> list[str]:
    lines = [
        "| figure | better | base model | prompt-only (full card) | adapter | real replies |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for field, label, better, pattern in FIGURES:
        values = [_fmt(getattr(getattr(report.systems, key), field), pattern) for key in SYSTEMS]
        lines.append(f"| {label} | {better} | {' | '.join(values)} | {_real_column(report, field)} |")
    return lines


IDENTITY_LABELS = {"card": "prompt-only (full card)", "prompt": "short prompt only", "adapter": "adapter"}


def identity_lines(report: FidelityReport) -> list[str]:
    """The identity section: who is speaking, turn by turn through held-out conversations."""
    identity = report.identity
    if identity is None:
        why = report.missing.get("identity")
        return ["", "## Identity, turn by turn", "", f"Not measured: {why}."] if why else []
    lines = [
        "",
        "## Identity, turn by turn",
        "",
        f"A scorer trained on {identity.character_lines} of the character's training replies against "
        f"{identity.other_lines} lines of other speakers and of the base model tells who is speaking "
        f"(cross-validated AUC {identity.auc:.3f}; 0.5 would be a coin). Each system talked through "
        f"{identity.scenes} held-out conversations, up to {identity.turns} turns, with its own replies as history.",
        "",
        "| system | mean identity | in character | drift (last 3 - first 3) | spread | worst talk | "
        "prompt tokens at the last turn |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [(IDENTITY_LABELS.get(k, k), f) for k, f in identity.systems.items()] + [("real replies", identity.real)]
    for label, f in rows:
        drift = "n/a" if f.drift is None else f"{f.drift:+.3f}"
        tokens = "" if f.last_prompt_tokens is None else f"{f.last_prompt_tokens:.0f}"
        lines.append(
            f"| {label} | {f.mean:.3f} | {f.in_character:.0%} | {drift} | {f.spread:.3f} | {f.worst:.3f} | {tokens} |"
        )
    by_turn = " | ".join(str(t + 1) for t in range(identity.turns))
    lines += ["", f"| identity at turn | {by_turn} |", "| --- |" + " ---: |" * identity.turns]
    for label, f in rows:
        cells = [f"{v:.2f}" for v in f.by_turn] + [""] * (identity.turns - len(f.by_turn))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def render_identity_png(report: FidelityReport) -> bytes:
    """Identity by turn: the prompt-only persona, the short prompt, the adapter and the real replies."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    identity = report.identity
    assert identity is not None
    figure = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    colours = {**COLOURS, "prompt": "#b0a040", "real": "black"}
    series = [(k, IDENTITY_LABELS.get(k, k), f) for k, f in identity.systems.items()]
    for key, label, f in [*series, ("real", "real replies", identity.real)]:
        turns = range(1, len(f.by_turn) + 1)
        style = "--" if key == "real" else "-"
        ax.plot(turns, f.by_turn, style, marker="o", color=colours.get(key, "grey"), label=label)
    ax.axhline(identity.threshold, color="grey", linewidth=0.8, linestyle=":")
    ax.set_ylim(0, 1)
    ax.set_xlabel("turn of the conversation")
    ax.set_ylabel("identity (is it the character?)")
    ax.set_title(f"{report.persona} {report.version}: identity by turn (scorer AUC {identity.auc:.2f})", fontsize=10)
    ax.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _gate_lines(report: FidelityReport) -> list[str]:
    gate = report.gate
    if gate is None:
        return []
    against = f" against live {gate.compared_with}" if gate.compared_with else ""
    lines = ["", "## Gate", "", f"**{gate.status}**{against}."]
    lines += [f"- {reason}" for reason in gate.reasons]
    if gate.checks:
        lines += ["", "| figure | this version | live | limit | passed |", "| --- | ---: | ---: | ---: | --- |"]
        lines += [
            f"| {c.figure} | {c.new:.4g} | {c.live:.4g} | {c.limit:.4g} | {'yes' if c.passed else 'no'} |"
            for c in gate.checks
        ]
    return lines


def _quote(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[:limit] + " ..."
    return text.replace("|", "\\|") or "(empty)"


def render_markdown(report: FidelityReport) -> str:
    """The report for people: the figures side by side, the gate, the card and a few replies."""
    head = [
        f"# Fidelity of {report.persona} {report.version}",
        "",
        f"Measured {report.created_at} in {report.duration_s:.0f} s on {report.heldout_sessions} held-out "
        f"sessions: {report.scored_examples} real replies scored, {report.prompts} held-out prompts answered by "
        f"each system, {len(report.probes)} probe questions in {report.sessions} fresh sessions. Base model "
        f"{report.base_model}; embeddings {report.embedding_model}.",
        "",
    ]
    body = figure_table(report) + identity_lines(report)
    if report.missing:
        body += ["", "Not measured on this persona's data:"]
        body += [f"- {figure}: {why}" for figure, why in report.missing.items() if figure != "identity"]
    if report.forgetting is not None:
        body += [
            "",
            f"Forgetting: the adapter's perplexity on general conversation is {report.forgetting:+.1%} "
            "relative to the base model's.",
        ]
    markers = report.systems.adapter.markers
    if markers:
        body += [
            "",
            "Voice markers: "
            + "; ".join(
                f"`{m}` real {report.real.markers.get(m, 0):.0%}, "
                + ", ".join(f"{k} {getattr(report.systems, k).markers.get(m, 0):.0%}" for k in SYSTEMS)
                for m in markers
            )
            + ".",
        ]
    tail = ["", "## The full card of the prompt-only persona", "", "```text", report.card_prompt, "```"]
    if report.samples:
        tail += ["", "## Sample replies to held-out prompts", ""]
        for sample in report.samples:
            tail += [f"- prompt: {_quote(sample.prompt)}", f"  - real: {_quote(sample.real)}"]
            tail += [f"  - {LABELS[k]}: {_quote(getattr(sample, k))}" for k in SYSTEMS]
    tail += ["", "## Probe questions", ""] + [f"- {_quote(p)}" for p in report.probes]
    return "\n".join(head + body + _gate_lines(report) + tail) + "\n"


def render_png(report: FidelityReport) -> bytes:
    """One bar chart per figure, the three systems side by side, the reference as a dashed line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(14, 6.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 4).ravel()
    references: dict[str, Callable[[FidelityReport], float | None]] = {
        "centroid_similarity": lambda r: r.real.centroid_ceiling,
        "classifier_accuracy": lambda r: 0.5,
        "marker_rate": lambda r: r.real.marker_rate,
    }
    for ax, (field, label, better, pattern) in zip(axes, FIGURES):
        systems: list[tuple[str, SystemFigures]] = [(k, getattr(report.systems, k)) for k in SYSTEMS]
        shown = [(k, getattr(f, field)) for k, f in systems if getattr(f, field) is not None]
        ax.set_title(
            f"{label}\n({better} is better)" if better != "as real" else f"{label}\n(closer to real)", fontsize=8.5
        )
        ax.tick_params(labelsize=8)
        if not shown:
            ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            continue
        bars = ax.bar([k for k, _ in shown], [v for _, v in shown], color=[COLOURS[k] for k, _ in shown])
        ax.bar_label(bars, labels=[pattern.format(v) for _, v in shown], fontsize=8)
        reference = references.get(field, lambda r: None)(report)
        if reference is not None:
            ax.axhline(reference, color="black", linestyle="--", linewidth=1)
        ax.margins(y=0.15)
    figure.suptitle(
        f"{report.persona} {report.version}: fidelity on held-out sessions (dashed: real replies / chance)", fontsize=11
    )
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_report(report: FidelityReport, folder: Path) -> dict[str, Path]:
    """Write the three files into ``folder`` (a version folder); returns their paths by kind."""
    folder = Path(folder)
    paths = {"json": folder / FIDELITY_JSON, "markdown": folder / FIDELITY_MD, "png": folder / FIDELITY_PNG}
    atomic_write(paths["png"], render_png(report))
    if report.identity is not None:
        paths["identity_png"] = folder / IDENTITY_PNG
        atomic_write(paths["identity_png"], render_identity_png(report))
    atomic_write(paths["markdown"], render_markdown(report))
    atomic_write(paths["json"], report.model_dump_json(indent=2))
    return paths
