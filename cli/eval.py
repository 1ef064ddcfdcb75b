"""``persona eval``: the fidelity report of a version, written beside it (JSON, Markdown, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import build_settings, fail

app = typer.Typer()


def _row(label: str, values: list[float | None], pattern: str) -> str:
    cells = ["n/a" if v is None else pattern.format(v) for v in values]
    return f"  {label:<44}" + "".join(f"{c:>12}" for c in cells)


@app.command("eval")
def eval_(
    name: str = typer.Argument(..., help="The persona to evaluate."),
    version: Optional[str] = typer.Option(None, help="The version, e.g. v3 (default: the live one)."),
    server: Optional[str] = typer.Option(
        None, help="A running server's API root, e.g. http://127.0.0.1:8000/v1 (default: start one for the run)."
    ),
    gate: bool = typer.Option(
        False, "--gate", help="Also decide, against the live version, whether this version could go live."
    ),
    personas_dir: Optional[Path] = typer.Option(None, help="Personas folder."),
    base_model: Optional[str] = typer.Option(None, help="'bundled', a folder or a Hugging Face id."),
) -> None:
    """Compare a version's adapter with the base model and the prompt-only persona on held-out sessions."""
    import contextlib

    from store.errors import StoreError
    from store.fidelity_report import SYSTEMS
    from store.settings import StoreSettings
    from training.fidelity import (
        FIDELITY_JSON,
        FIDELITY_MD,
        FIDELITY_PNG,
        Evaluation,
        FidelityError,
        served,
    )
    from training.fidelity.report import FIGURES
    from training.ingest import IngestError
    from training.server_client import ServerError

    if gate and version is None:
        fail("--gate needs --version: a version is compared with the live one")
    settings = build_settings(StoreSettings, personas_dir=personas_dir, base_model=base_model)
    try:
        evaluation = Evaluation.prepare(settings, name)
        number = evaluation.check(version)  # before a server is started
        with contextlib.nullcontext(server.rstrip("/")) if server else served(settings) as url:
            report = evaluation.gate(number, url) if gate else evaluation.evaluate(number, url)
    except (FidelityError, StoreError, IngestError, ServerError) as exc:
        fail(str(exc))
    typer.echo(
        f"{report.persona} {report.version} on {report.heldout_sessions} held-out sessions ({report.duration_s:.0f} s):"
    )
    typer.echo(f"  {'':<44}" + "".join(f"{k:>12}" for k in SYSTEMS) + f"{'real':>12}")
    for field, label, better, pattern in FIGURES:
        values = [getattr(getattr(report.systems, k), field) for k in SYSTEMS]
        real = {"centroid_similarity": report.real.centroid_ceiling, "marker_rate": report.real.marker_rate}.get(field)
        typer.echo(_row(f"{label} ({better})", values + [real], pattern))
    if report.gate is not None:
        typer.echo(f"gate: {report.gate.status}" + "".join(f"\n  - {r}" for r in report.gate.reasons))
    folder = evaluation.persona.version_path(number)
    typer.echo(f"report: {folder / FIDELITY_MD} (and {FIDELITY_JSON}, {FIDELITY_PNG})")
