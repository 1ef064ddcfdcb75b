"""Fidelity: does an adapter keep its character's voice better than a well-written prompt?

Every figure is measured on the persona's held-out sessions, for three systems: the base model alone,
the prompt-only persona (base model + the full card) and the adapter as it is served::

    from training.fidelity import evaluate_version, gate_version, decide
    report = evaluate_version(store_settings, "wren", "v3", "http://127.0.0.1:8000/v1")
    report.systems.adapter.perplexity, report.systems.card.centroid_similarity, report.real.centroid_ceiling
    report = gate_version(store_settings, "wren", 4, url)      # report.gate: go live or held back

Modules: :mod:`.plan` (what is asked and scored), :mod:`.card_prompt` (the full card),
:mod:`training.server_client` (replies through the server), :mod:`.perplexity`, :mod:`.embed`, :mod:`.metrics`
(pure figures), :mod:`.general` (forgetting), :mod:`.identity` (is it the character speaking?),
:mod:`.dialogue` and :mod:`.identity_report` (identity turn by turn through held-out conversations),
:mod:`.report` (JSON, Markdown, PNG), :mod:`.gate`
(the comparison), :mod:`.judge` (a new version's decision, ``gate.json``, failing closed),
:mod:`.server` (``persona serve`` as a child process when no server is given), :mod:`.settings`
(the card's ``fidelity:`` section); the report's shape is :mod:`store.fidelity_report`.
"""

from store.fidelity_report import FIDELITY_JSON, FIDELITY_MD, FIDELITY_PNG, FidelityReport, GateDecision, read_report

from .evaluate import Evaluation, evaluate_version, gate_version, settings_for
from .gate import TooSmallToJudge, comparable, decide
from .judge import judge_version
from .server import served
from .settings import FidelityError, FidelitySettings, GateThresholds

__all__ = [
    "FIDELITY_JSON",
    "FIDELITY_MD",
    "FIDELITY_PNG",
    "Evaluation",
    "FidelityError",
    "FidelityReport",
    "FidelitySettings",
    "GateDecision",
    "GateThresholds",
    "TooSmallToJudge",
    "comparable",
    "decide",
    "evaluate_version",
    "gate_version",
    "judge_version",
    "read_report",
    "served",
    "settings_for",
]
