"""The page's fidelity table beside the version picker: the picked version's figures and the gate."""

from __future__ import annotations

from service.personas.protocol import FidelitySummary, PersonaStatus, VersionStatus
from service.ui.fidelity import fidelity_markdown
from service.ui.session import LIVE


def summary(adapter_ppl: float, gate: str) -> FidelitySummary:
    return FidelitySummary(
        perplexity={"base": 110.0, "card": 91.0, "adapter": adapter_ppl},
        centroid_similarity={"base": 0.31, "card": 0.40, "adapter": None},
        identity={"card": 0.41, "prompt": 0.3, "adapter": 0.72, "real": 0.8},
        identity_drift={"card": -0.12, "prompt": -0.2, "adapter": 0.01, "real": 0.0},
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
    assert "| | perplexity ↓ | style ↑ | identity ↑ |" in text
    assert "| base | 110.0 | 0.31 | – |" in text  # a figure not measured
    assert "| card only | 91.0 | 0.40 | 0.41 (-0.12) |" in text
    assert "| adapter | 60.0 | – | 0.72 (+0.01) |" in text
    assert "| real | – | – | 0.80 (+0.00) |" in text
    assert "variation" not in text  # what is said, not who says it: not a headline figure


def test_every_cell_is_short_enough_for_the_side_column() -> None:
    rows = [line for line in fidelity_markdown(status(), LIVE).splitlines() if line.startswith("| ")]
    assert rows and all(len(cell.strip()) <= 13 for row in rows for cell in row.strip("|").split("|"))


def test_a_held_back_version_says_so_with_the_gate_s_reasons() -> None:
    text = fidelity_markdown(status(), "v2")
    assert "held back by the fidelity gate" in text and "| adapter | 140.0 |" in text
    assert "- perplexity worse than v1" in text


def test_nothing_is_shown_without_a_report() -> None:
    assert fidelity_markdown(status(), "v3") == ""
    assert fidelity_markdown(status(), "v9") == ""
    assert fidelity_markdown(None, LIVE) == ""


def test_an_unjudged_live_version_says_so_beside_the_picker_even_without_a_report() -> None:
    from service.ui.session import version_choices
    from store.fidelity_report import GateDecision

    gate = GateDecision(
        go_live=True,
        status="unjudged",
        reasons=["2 held-out sessions; 3 are needed to judge"],
        missing=["style similarity: no server to generate through"],
    )
    shown = status().model_copy(update={"live_gate": "unjudged"})
    shown.versions[0] = VersionStatus(version="v1", live=True, gate=gate)
    text = fidelity_markdown(shown, LIVE)
    assert text.startswith("**v1** · unjudged") and "- 2 held-out sessions; 3 are needed to judge" in text
    assert "- not measured: style similarity: no server to generate through" in text
    assert version_choices(shown)[0] == ("live (v1, unjudged)", LIVE)


def test_a_version_whose_evaluation_failed_is_held_back_with_the_error() -> None:
    from store.fidelity_report import GateDecision

    gate = GateDecision(go_live=False, status="held back", error="CUDA out of memory")
    shown = status()
    shown.versions[2] = VersionStatus(version="v3", live=False, held_back=True, gate=gate)
    text = fidelity_markdown(shown, "v3")
    assert "held back: its evaluation failed" in text and "- evaluation failed: CUDA out of memory" in text


def test_a_version_live_on_its_perplexity_says_the_rest_of_its_report_is_coming() -> None:
    from store.fidelity_report import GateDecision

    gate = GateDecision(
        go_live=True,
        status="live",
        provisional=True,
        compared_with="v1",
        missing=["identity: in the report measured next"],
    )
    shown = status()
    shown.versions[1] = VersionStatus(version="v2", live=True, gate=gate)
    text = fidelity_markdown(shown, "v2")
    assert "live on its held-out perplexity against v1; the rest of its report is being measured" in text
    assert "- not measured yet: identity: in the report measured next" in text


def test_a_first_version_live_before_its_report_says_its_report_is_coming() -> None:
    from store.fidelity_report import GateDecision

    gate = GateDecision(
        go_live=True,
        status="live",
        provisional=True,
        reasons=["no live version to compare with"],
        missing=["perplexity: in the report measured next"],
    )
    shown = status()
    shown.versions[0] = VersionStatus(version="v1", live=True, gate=gate)
    text = fidelity_markdown(shown, LIVE)
    assert "live (nothing to compare it with yet); its report is being measured" in text
    assert "- not measured yet: perplexity: in the report measured next" in text
