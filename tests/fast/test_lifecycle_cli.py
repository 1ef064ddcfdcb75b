"""Rollback, promote, pin and remove from the command line, on a store with stand-in versions."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from store.adapters import is_pinned, read_live
from store.registry import PersonaStore

from .fake_store import write_version


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_rollback_promote_pin_and_remove(tmp_path: Path) -> None:
    root = tmp_path / "personas"
    wren = root / "wren"
    (wren / "logs").mkdir(parents=True)
    for number in (1, 2, 3):
        write_version(wren, number, "h" * 64, weights=f"w{number}".encode())
    where = ["--personas-dir", str(root)]

    assert run("rollback", "wren", *where).exit_code == 0 and read_live(wren) == 2
    assert run("rollback", "wren", "--to", "v1", *where).output.strip() == "wren: v1 is live"
    refused = run("rollback", "wren", *where)
    assert refused.exit_code == 1 and "no version older" in refused.output
    assert run("rollback", "wren", "--to", "v9", *where).exit_code == 1

    assert run("promote", "wren", "v3", *where).exit_code == 0 and read_live(wren) == 3
    assert run("pin", "wren", *where).output.strip() == "wren: pinned to v3" and is_pinned(wren)
    assert "(pinned)" in run("list", *where).output
    assert run("unpin", "wren", *where).exit_code == 0 and not is_pinned(wren)

    removed = run("remove", "wren", "--yes", *where)
    assert removed.exit_code == 0, removed.output
    assert PersonaStore(root).names() == [] and len(list((root / ".removed").iterdir())) == 1
    assert run("rollback", "wren", *where).exit_code == 1
