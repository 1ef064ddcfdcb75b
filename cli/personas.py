"""``persona list``, ``rollback``, ``promote``, ``pin``, ``unpin`` and ``remove``: the store on disk.

A running server picks every change up on its next request; none of these needs a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import build_settings, fail

app = typer.Typer()
PersonasDir = typer.Option(None, help="Personas folder [PERSONA_PERSONAS_DIR].")


def _persona(name: str, personas_dir: Optional[Path]):
    from store.errors import StoreError
    from store.registry import PersonaStore
    from store.settings import StoreSettings

    settings = build_settings(StoreSettings, personas_dir=personas_dir)
    try:
        return PersonaStore(settings.personas_dir), PersonaStore(settings.personas_dir).get(name)
    except StoreError as exc:
        fail(str(exc))


@app.command("list")
def list_personas(personas_dir: Optional[Path] = PersonasDir) -> None:
    """List personas with their live version (and whether the gate judged it), pin, held-back versions
    and training jobs."""
    from store.adapters import is_pinned
    from store.fidelity_report import read_gate
    from store.jobs import JobStore, job_summary
    from store.registry import PersonaStore
    from store.settings import StoreSettings

    settings = build_settings(StoreSettings, personas_dir=personas_dir)
    personas, problems = PersonaStore(settings.personas_dir).scan()
    active = {job.persona: job for job in JobStore(settings.personas_dir).all() if job.active}
    for persona in personas:
        gates = {v: read_gate(persona.version_path(v)) for v in persona.versions}
        live = f"v{persona.live}" if persona.live else "card only"
        live_gate = gates.get(persona.live) if persona.live else None
        judged = " (unjudged)" if live_gate is not None and live_gate.status == "unjudged" else ""
        pin = " (pinned)" if is_pinned(persona.path) else ""
        versions = ", ".join(f"v{v}" for v in persona.versions) or "-"
        held = [v for v, gate in gates.items() if gate is not None and not gate.go_live and v != persona.live]
        held_back = f"  held back v{held[-1]}" if held and held[-1] > (persona.live or 0) else ""
        job = f"  job: {job_summary(active[persona.name])}" if persona.name in active else ""
        typer.echo(
            f"{persona.name:20} {persona.title:24} live: {live + judged + pin:19} versions: {versions}{held_back}{job}"
        )
    for name, message in problems.items():
        typer.secho(f"{name:20} problem: {message}", fg=typer.colors.YELLOW)


def _version(text: Optional[str]) -> Optional[int]:
    from store.errors import StoreError
    from store.names import check_version

    if text is None:
        return None
    try:
        return check_version(text)
    except StoreError as exc:
        fail(str(exc))


@app.command()
def rollback(
    name: str,
    version: Optional[str] = typer.Argument(None, help="The version to make live (same as --to)."),
    to: Optional[str] = typer.Option(
        None, "--to", help="The version to make live, e.g. v1; default: the one before the live version."
    ),
    personas_dir: Optional[Path] = PersonasDir,
) -> None:
    """Make an earlier version live again."""
    from store.adapters import rollback as roll_back
    from store.errors import StoreError

    _, persona = _persona(name, personas_dir)
    try:
        live = roll_back(persona.path, _version(to or version))
    except StoreError as exc:
        fail(str(exc))
    typer.echo(f"{name}: v{live} is live")


@app.command()
def promote(
    name: str,
    version: str = typer.Argument(..., help="The version to make live, e.g. v3."),
    personas_dir: Optional[Path] = PersonasDir,
) -> None:
    """Make a version live, e.g. one the fidelity gate held back."""
    from store.adapters import rollback as make_live
    from store.errors import StoreError

    _, persona = _persona(name, personas_dir)
    try:
        make_live(persona.path, _version(version))
    except StoreError as exc:
        fail(str(exc))
    typer.echo(f"{name}: {version} is live")


@app.command()
def pin(name: str, personas_dir: Optional[Path] = PersonasDir) -> None:
    """Keep the live version live: automatic retraining skips the persona; a run you start publishes
    its new version beside the live one."""
    from store.adapters import set_pinned
    from store.errors import StoreError

    _, persona = _persona(name, personas_dir)
    try:
        set_pinned(persona.path, True)
    except StoreError as exc:
        fail(str(exc))
    typer.echo(f"{name}: pinned to v{persona.live}")


@app.command()
def unpin(name: str, personas_dir: Optional[Path] = PersonasDir) -> None:
    """Let automatic retraining replace the live version again."""
    from store.adapters import set_pinned

    _, persona = _persona(name, personas_dir)
    set_pinned(persona.path, False)
    typer.echo(f"{name}: not pinned")


@app.command()
def remove(
    name: str,
    personas_dir: Optional[Path] = PersonasDir,
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Take a persona out of service (its folder is moved to .removed/, not deleted)."""
    store, persona = _persona(name, personas_dir)
    if not yes:
        typer.confirm(f"Take persona '{name}' out of service?", abort=True)
    target = store.remove(persona.name)
    typer.echo(f"{name}: removed from service; its files are in {target}")
