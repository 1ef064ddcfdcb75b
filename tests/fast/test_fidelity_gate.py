"""The gate's decision both ways, its tolerances from the card, and refusing unlike comparisons."""

from __future__ import annotations

import pytest

from store.card import PersonaCard
from store.fidelity_report import IdentityFigures
from training.fidelity import FidelityError, FidelityReport, FidelitySettings, GateThresholds, decide


def report(
    version: str, perplexity: float, centroid: float, *, data_hash: str = "d" * 64, forgetting: float | None = 0.01
) -> FidelityReport:
    figures = {"perplexity": perplexity, "centroid_similarity": centroid, "pair_similarity": 0.2}
    return FidelityReport.model_validate(
        {
            "persona": "wren",
            "version": version,
            "base_model": "SmolLM2-135M-Instruct",
            "data_hash": data_hash,
            "heldout_sessions": 4,
            "scored_examples": 20,
            "prompts": 20,
            "probes": ["Hi?"],
            "sessions": 4,
            "settings": FidelitySettings().model_dump(),
            "card_prompt": "You are Wren.",
            "embedding_model": "m",
            "systems": {"base": {"perplexity": 110.0}, "card": {"perplexity": 91.0}, "adapter": figures},
            "real": {"replies": 20, "centroid_ceiling": 0.44},
            "forgetting": forgetting,
        }
    )


LIVE = report("v1", perplexity=60.0, centroid=0.40)


def test_a_version_as_good_as_the_live_one_goes_live() -> None:
    decision = decide(report("v2", perplexity=59.0, centroid=0.41), LIVE, GateThresholds())
    assert decision.go_live and decision.status == "live" and decision.reasons == []
    assert decision.compared_with == "v1"
    assert {c.figure for c in decision.checks} == {"perplexity", "centroid_similarity"}


def test_a_worse_version_is_held_back_with_the_reasons() -> None:
    decision = decide(report("v2", perplexity=75.0, centroid=0.30), LIVE, GateThresholds())
    assert not decision.go_live and decision.status == "held back"
    assert len(decision.reasons) == 2
    assert "perplexity 75.00" in decision.reasons[0] and "v1's 60.00" in decision.reasons[0]
    assert "style similarity 0.300" in decision.reasons[1]


def test_tolerances_let_noise_through_but_not_more() -> None:
    thresholds = GateThresholds(max_perplexity_increase=0.05, max_similarity_drop=0.03)
    assert decide(report("v2", perplexity=62.9, centroid=0.375), LIVE, thresholds).go_live
    held = decide(report("v2", perplexity=63.1, centroid=0.375), LIVE, thresholds)
    assert not held.go_live and [c.figure for c in held.checks if not c.passed] == ["perplexity"]
    held = decide(report("v2", perplexity=60.0, centroid=0.36), LIVE, thresholds)
    assert [c.figure for c in held.checks if not c.passed] == ["centroid_similarity"]


def test_forgetting_is_checked_only_when_a_limit_is_set() -> None:
    forgetful = report("v2", perplexity=50.0, centroid=0.45, forgetting=0.30)
    assert decide(forgetful, LIVE, GateThresholds()).go_live
    held = decide(forgetful, LIVE, GateThresholds(max_forgetting=0.10))
    assert not held.go_live and "forgetting +30.0%" in held.reasons[0]


def test_the_first_version_goes_live() -> None:
    decision = decide(report("v1", perplexity=300.0, centroid=0.1), None, GateThresholds())
    assert decision.go_live and decision.compared_with is None


def test_reports_on_other_data_are_not_compared() -> None:
    with pytest.raises(FidelityError, match="different held-out data.*evaluate v1 again"):
        decide(report("v2", perplexity=50.0, centroid=0.5, data_hash="e" * 64), LIVE, GateThresholds())


def test_thresholds_come_from_the_card_and_a_bad_one_names_the_field() -> None:
    card = PersonaCard.model_validate({"fidelity": {"sessions": 3, "gate": {"max_perplexity_increase": 0.1}}})
    settings = FidelitySettings.from_card(card.fidelity, "personas/wren/persona.yaml")
    assert settings.sessions == 3 and settings.gate.max_perplexity_increase == 0.1
    assert settings.gate.max_similarity_drop == GateThresholds().max_similarity_drop
    with pytest.raises(FidelityError, match=r"personas/wren/persona.yaml: field 'fidelity.gate.max_similarity_drop'"):
        FidelitySettings.from_card({"gate": {"max_similarity_drop": -1}}, "personas/wren/persona.yaml")
    with pytest.raises(FidelityError, match=r"field 'fidelity.probs'"):
        FidelitySettings.from_card({"probs": 5}, "persona.yaml")


def _with_identity(base: FidelityReport, adapter_by_turn: list[float]) -> FidelityReport:
    def turns(values: list[float]) -> dict:
        return {"by_turn": values, "drift": values[-1] - values[0], "in_character": 0.8, "spread": 0.1,
                "worst": min(values)}  # fmt: skip

    identity = {
        "auc": 0.9, "threshold": 0.5, "character_lines": 100, "other_lines": 120, "turns": len(adapter_by_turn),
        "scenes": 4, "systems": {"card": turns([0.5, 0.4, 0.3]), "adapter": turns(adapter_by_turn)},
        "real": turns([0.8, 0.8, 0.8]),
    }  # fmt: skip
    return base.model_copy(update={"identity": IdentityFigures.model_validate(identity)})


def test_a_version_that_leaves_the_character_through_a_talk_is_held_back() -> None:
    live = _with_identity(LIVE, [0.7, 0.7, 0.7])
    steady = decide(_with_identity(report("v2", 59.0, 0.41), [0.72, 0.68, 0.7]), live, GateThresholds())
    assert steady.go_live and "identity" in {c.figure for c in steady.checks}
    drifting = decide(_with_identity(report("v2", 59.0, 0.41), [0.7, 0.5, 0.3]), live, GateThresholds())
    assert not drifting.go_live
    assert any("identity through held-out conversations 0.500" in r and "v1's 0.700" in r for r in drifting.reasons)


def test_a_figure_the_persona_cannot_give_is_listed_as_not_taken_not_held_against_it() -> None:
    def no_style(version: str, perplexity: float) -> FidelityReport:
        r = report(version, perplexity, 0.0)
        r.systems.adapter.centroid_similarity = None
        r.missing = {"centroid_similarity": "1 held-out replies answer a user's turn; at least 2 are needed"}
        return r

    decision = decide(no_style("v2", 59.0), no_style("v1", 60.0), GateThresholds())
    assert decision.go_live and [c.figure for c in decision.checks] == ["perplexity"]
    assert decision.missing == ["centroid_similarity: 1 held-out replies answer a user's turn; at least 2 are needed"]
    one_sided = decide(no_style("v2", 59.0), LIVE, GateThresholds())
    assert not one_sided.go_live and "style similarity is missing from a report" in one_sided.reasons
