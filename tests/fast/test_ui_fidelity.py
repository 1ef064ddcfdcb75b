"""The page's fidelity table beside the version picker: the picked version's figures and the gate."""

from __future__ import annotations

from service.personas.protocol import FidelitySummary, PersonaStatus, VersionStatus
from service.ui.fidelity import fidelity_markdown
from service.ui.session import LIVE


def summary(adapter_ppl: float, gate: str) -> FidelitySummary:
    return FidelitySummary(
        perplexity={"base": 110.0, "card": 91.0, "adapter": adapter_ppl},
        centroid_similarity={"base": 0.31, "card": 0.40, "adapter": None},
        session_variation={"base": 0.7, "card": 0.56, "adapter": 0.5},
        gate=gate,
        reasons=["perplexity worse than v1"] if gate == "held back" else [],
    )


def status() -> PersonaStatus:
    return PersonaStatus(
        name="wren",
        display_name="Wren",
        description="",
        status="trained",
        live_version="v1",
        versions=[
            VersionStatus(version="v1", live=True, fidelity=summary(60.0, "live")),
            VersionStatus(version="v2", live=False, held_back=True, fidelity=summary(140.0, "held back")),
            VersionStatus(version="v3", live=False),
        ],
        greeting=None,
        example_questions=[],
    )


def test_the_live_version_s_figures_are_shown_for_live() -> None:
    text = fidelity_markdown(status(), LIVE)
    assert text.startswith("**v1 against the card alone** · live")
    assert "| held-out perplexity (lower is closer) | 110.0 | 91.0 | 60.0 |" in text
    assert "| style similarity (higher is closer) | 0.31 | 0.40 | – |" in text  # a figure not measured


def test_a_held_back_version_says_so_with_the_gate_s_reasons() -> None:
    text = fidelity_markdown(status(), "v2")
    assert "held back by the fidelity gate" in text and "| 140.0 |" in text
    assert "- perplexity worse than v1" in text


def test_nothing_is_shown_without_a_report() -> None:
    assert fidelity_markdown(status(), "v3") == ""
    assert fidelity_markdown(status(), "v9") == ""
    assert fidelity_markdown(None, LIVE) == ""
