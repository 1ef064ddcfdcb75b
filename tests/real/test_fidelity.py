"""``persona eval`` on the shared server: a version's report against the base model and the prompt-only
persona, and the gate holding back a deliberately bad version while the live one keeps serving."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from store.adapters import METADATA_FILE, AdapterMetadata, new_staging_dir, publish, read_live, set_live
from store.fidelity_report import IDENTITY_PNG
from tests.conftest import REPO
from training.fidelity import FIDELITY_JSON, FIDELITY_MD, FIDELITY_PNG, FidelityReport, read_report
from training.fidelity.report import FIGURES

pytestmark = pytest.mark.real

NAME = "fidelity-wren"
QUICK = (
    "fidelity:\n  heldout_prompts: 6\n  probes: 3\n  sessions: 2\n  max_tokens: 24\n  perplexity_examples: 8\n"
    "  dialogue_turns: 3\n  dialogue_sessions: 2\n  identity_lines: 64\n  generic_answers: 8\n"
)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def publish_adapter(folder: Path, base, data_hash: str, scale: float, seed: int) -> int:
    """A LoRA version with random weights of ``scale`` (0: no change to the base model), not made live."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    staged = new_staging_dir(folder)
    peft_model.save_pretrained(staged)
    meta = AdapterMetadata(base_model=base.id, base_hash=base.hash, data_hash=data_hash)
    (staged / METADATA_FILE).write_text(meta.model_dump_json())
    return publish(folder, staged, make_live=False)


@pytest.fixture(scope="module")
def evaluated_persona(live_server, base_model, tmp_path_factory) -> Path:
    """A copy of wren with a harmless v1 (live) and a noisy v2, moved into the served folder whole.

    The versions record the logs' data hash, so the folder watcher finds nothing to train."""
    from store.registry import PersonaStore
    from training.ingest import ExampleSettings, build_examples, load_logs

    staging = tmp_path_factory.mktemp("fidelity") / NAME
    shutil.copytree(REPO / "personas" / "wren", staging, ignore=shutil.ignore_patterns("adapters"))
    with open(staging / "persona.yaml", "a", encoding="utf-8") as card:
        card.write(QUICK)
    persona = PersonaStore(staging.parent).get(NAME)
    examples = build_examples(
        load_logs(persona.logs_dir), NAME, persona.card, ExampleSettings.from_overrides(persona.card.training)
    )
    assert publish_adapter(staging, base_model, examples.data_hash, scale=0.0, seed=1) == 1
    assert publish_adapter(staging, base_model, examples.data_hash, scale=0.1, seed=2) == 2
    set_live(staging, 1)
    folder = live_server.personas_dir / NAME
    shutil.move(staging, folder)
    return folder


def persona_eval(live_server, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PERSONA_PERSONAS_DIR": str(live_server.personas_dir),
        "PERSONA_CACHE_DIR": live_server.env["PERSONA_CACHE_DIR"],
    }
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "eval", NAME, "--server", live_server.url + "/v1", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def test_a_version_is_compared_with_the_base_model_and_the_prompt_only_persona(live_server, evaluated_persona):
    run = persona_eval(live_server)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{NAME} v1 on" in run.stdout and "held-out perplexity" in run.stdout

    version = evaluated_persona / "adapters" / "v1"
    for name in (FIDELITY_JSON, FIDELITY_MD, FIDELITY_PNG):
        assert (version / name).is_file()
    report = FidelityReport.model_validate_json((version / FIDELITY_JSON).read_text())
    assert read_report(version) == report and report.version == "v1" and report.persona == NAME
    assert report.prompts == 6 and len(report.probes) == 3 and report.sessions == 2
    for key in ("base", "card", "adapter"):
        figures = getattr(report.systems, key)
        for field, *_ in FIGURES:
            if (key, field) != ("card", "general_perplexity"):
                assert getattr(figures, field) is not None, (key, field)
    assert 0 < report.real.centroid_ceiling <= 1 and report.real.marker_rate is not None
    # The full card costs context; v1's adapter is all zeros, so it forgets nothing.
    assert report.systems.card.prompt_tokens > 2 * report.systems.adapter.prompt_tokens
    assert report.forgetting == pytest.approx(0.0, abs=1e-4)
    markdown = (version / FIDELITY_MD).read_text()
    assert all(label in markdown for _, label, _, _ in FIGURES) and report.card_prompt in markdown
    assert (version / FIDELITY_PNG).read_bytes()[:4] == b"\x89PNG"
    # Identity, turn by turn: each system talked through held-out scenes with its own history.
    identity = report.identity
    assert identity is not None, report.missing
    assert 0.5 <= identity.auc <= 1 and identity.turns == 3 and identity.scenes >= 1
    for key in ("card", "adapter"):
        figures = identity.systems[key]
        assert 1 <= len(figures.by_turn) <= 3 and all(0 <= value <= 1 for value in figures.by_turn)
        assert 0 <= figures.in_character <= 1 and figures.last_prompt_tokens
    assert identity.systems["card"].last_prompt_tokens > identity.systems["adapter"].last_prompt_tokens
    assert identity.real.by_turn and (version / IDENTITY_PNG).read_bytes()[:4] == b"\x89PNG"


def test_a_bad_version_is_held_back_and_the_live_one_keeps_serving(live_server, evaluated_persona, client):
    run = persona_eval(live_server, "--version", "v2", "--gate")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "gate: held back" in run.stdout

    report = read_report(evaluated_persona / "adapters" / "v2")
    live = read_report(evaluated_persona / "adapters" / "v1")
    assert report is not None and live is not None and report.gate is not None
    assert not report.gate.go_live and report.gate.compared_with == "v1"
    failed = {check.figure for check in report.gate.checks if not check.passed}
    assert "perplexity" in failed
    assert report.systems.adapter.perplexity > live.systems.adapter.perplexity
    assert read_live(evaluated_persona) == 1

    reply = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Any scones?"}], max_tokens=8, temperature=0
    )
    assert reply.system_fingerprint == "v1"
