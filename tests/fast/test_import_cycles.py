"""The store, the service, the training side and the CLI import each other without circles (every import
that runs counts, function-local ones included): ``bench/import_cycles.py`` builds the graph."""

from __future__ import annotations

from bench.import_cycles import cycles, graph


def test_no_import_circle() -> None:
    assert cycles(graph()) == []


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


def test_an_import_only_for_type_checking_makes_no_circle(tmp_path) -> None:
    package = tmp_path / "service"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "ops.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .wrapper import W\n")
    (package / "wrapper.py").write_text("from .ops import f\n")
    assert cycles(graph(tmp_path, ["service"])) == []
