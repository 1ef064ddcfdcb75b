"""The training side, the store and the CLI import each other without circles (every import counts,
function-local ones included): ``bench/import_cycles.py`` builds the graph."""

from __future__ import annotations

from bench.import_cycles import cycles, graph


def test_no_import_circle_outside_the_service() -> None:
    circles = [c for c in cycles(graph()) if any(not m.startswith("service.") for m in c)]
    assert circles == []


def test_a_circle_through_a_function_local_import_and_a_package_init_is_found(tmp_path) -> None:
    package = tmp_path / "training"
    (package / "fidelity").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "answers.py").write_text("def f():\n    from .fidelity.client import ask\n")
    (package / "fidelity" / "__init__.py").write_text("from .general import g\n")
    (package / "fidelity" / "general.py").write_text("from ..answers import f\n")
    (package / "fidelity" / "client.py").write_text("ask = 1\n")
    assert cycles(graph(tmp_path, ["training"])) == [
        ["training.answers", "training.fidelity", "training.fidelity.general"]
    ]
