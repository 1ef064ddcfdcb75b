"""Writing a report beside a version: the JSON reads back, the Markdown and the chart hold every figure."""

from __future__ import annotations

import json

import pytest

from training.fidelity import FidelityReport, FidelitySettings, decide, read_report
from training.fidelity.report import FIGURES, write_report

FIGURES_BY_SYSTEM = {
    "base": {
        "perplexity": 110.4,
        "pair_similarity": 0.101,
        "centroid_similarity": 0.211,
        "classifier_accuracy": 0.93,
        "session_variation": 0.612,
        "prompt_tokens": 38.0,
        "marker_rate": 0.05,
        "markers": {"crumbs": 0.05},
        "general_perplexity": 3.2,
    },
    "card": {
        "perplexity": 91.2,
        "pair_similarity": 0.231,
        "centroid_similarity": 0.432,
        "classifier_accuracy": 0.79,
        "session_variation": 0.561,
        "prompt_tokens": 202.0,
        "marker_rate": 0.4,
        "markers": {"crumbs": 0.4},
    },
    "adapter": {
        "perplexity": 60.7,
        "pair_similarity": 0.204,
        "centroid_similarity": 0.401,
        "classifier_accuracy": 0.64,
        "session_variation": 0.703,
        "prompt_tokens": 60.0,
        "marker_rate": 0.55,
        "markers": {"crumbs": 0.55},
        "general_perplexity": 3.5,
    },
}


def make_report(version: str = "v2") -> FidelityReport:
    return FidelityReport.model_validate(
        {
            "persona": "wren",
            "version": version,
            "base_model": "SmolLM2-135M-Instruct",
            "data_hash": "d" * 64,
            "duration_s": 84.0,
            "heldout_sessions": 4,
            "scored_examples": 20,
            "prompts": 20,
            "probes": ["What's the secret to a good scone?"],
            "sessions": 4,
            "settings": FidelitySettings().model_dump(),
            "card_prompt": "You are Wren Tuttle.\n\nExample exchanges with Wren:\nUser: Hi\nWren: Hello, petal!",
            "embedding_model": "all-MiniLM-L6-v2",
            "systems": FIGURES_BY_SYSTEM,
            "real": {"replies": 20, "centroid_ceiling": 0.443, "marker_rate": 0.6, "markers": {"crumbs": 0.6}},
            "forgetting": 3.5 / 3.2 - 1,
            "samples": [
                {
                    "prompt": "Any scones | left?",
                    "real": "Two left, petal!",
                    "base": "Yes.",
                    "card": "Oh yes.",
                    "adapter": "Oh crumbs, two!",
                }
            ],
        }
    )


def test_the_three_files_are_written_and_the_json_reads_back(tmp_path) -> None:
    report = make_report()
    report.gate = decide(report, make_report("v1"), FidelitySettings().gate)
    paths = write_report(report, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"fidelity.json", "fidelity.md", "fidelity.png"}
    assert read_report(tmp_path) == report
    data = json.loads(paths["json"].read_text())
    for key, figures in FIGURES_BY_SYSTEM.items():
        for field, value in figures.items():
            assert data["systems"][key][field] == value
    assert data["gate"]["status"] == "live" and data["gate"]["compared_with"] == "v1"
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_markdown_shows_every_figure_of_every_system(tmp_path) -> None:
    report = make_report()
    markdown = write_report(report, tmp_path)["markdown"].read_text()
    for _, label, _, _ in FIGURES:
        assert label in markdown
    table_row = next(line for line in markdown.splitlines() if line.startswith("| held-out perplexity"))
    assert "110.4" in table_row and "91.2" in table_row and "60.7" in table_row
    assert "0.443 (ceiling)" in markdown and "| 202 | 60 |" in markdown
    assert "+9.4%" in markdown  # forgetting
    assert "Any scones \\| left?" in markdown  # table characters in replies are escaped
    assert report.card_prompt in markdown


def test_a_missing_or_broken_report_reads_as_none(tmp_path) -> None:
    assert read_report(tmp_path) is None
    (tmp_path / "fidelity.json").write_text("{not json")
    assert read_report(tmp_path) is None


def test_identity_by_turn_is_written_as_a_table_and_a_chart(tmp_path) -> None:
    from store.fidelity_report import IDENTITY_PNG, IdentityFigures

    def turns(values: list[float], tokens: float | None = None) -> dict:
        return {"by_turn": values, "drift": values[-1] - values[0], "in_character": 0.75, "spread": 0.05,
                "worst": min(values), "last_prompt_tokens": tokens}  # fmt: skip

    report = make_report()
    report.identity = IdentityFigures.model_validate({
        "auc": 0.91, "threshold": 0.5, "character_lines": 150, "other_lines": 180, "turns": 3, "scenes": 4,
        "systems": {"card": turns([0.6, 0.4, 0.2], 420), "adapter": turns([0.7, 0.7, 0.72], 95)},
        "real": turns([0.8, 0.82, 0.8]),
    })  # fmt: skip
    paths = write_report(report, tmp_path)
    markdown = paths["markdown"].read_text()
    assert "## Identity, turn by turn" in markdown and "AUC 0.910" in markdown
    assert "| prompt-only (full card) | 0.400 | 75% | -0.400 |" in markdown
    assert "| adapter | 0.70 | 0.70 | 0.72 |" in markdown and "| adapter | 0.707 | 75% | +0.020 |" in markdown
    assert (tmp_path / IDENTITY_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert FidelityReport.model_validate_json(paths["json"].read_text()).identity.systems[
        "card"
    ].drift == pytest.approx(-0.4)


def test_figures_the_data_cannot_give_are_named_with_the_reason(tmp_path) -> None:
    report = make_report()
    report.missing = {"identity": "no held-out conversation has a user turn", "pair_similarity": "1 prompt"}
    markdown = write_report(report, tmp_path)["markdown"].read_text()
    assert "Not measured: no held-out conversation has a user turn." in markdown
    assert "- pair_similarity: 1 prompt" in markdown
