"""The one job runner, with training and scoring faked: ``persona train`` with no worker is gated and
respects the pin, an evaluation that crashes holds the version back, a persona too small to judge
goes live unjudged, and the logs are parsed once per job."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from cli.main import app
from store.adapters import METADATA_FILE, read_live, set_pinned
from store.fidelity_report import read_gate
from store.jobs import JobStore
from store.registry import PersonaStore

from .fake_store import write_version

NAME = "wren"


def _logs(persona: Path, sessions: int = 12) -> None:
    blocks = [
        f"Kit: Is the bakery open, {s}?\nWren: Oh crumbs, yes, petal.\nKit: Scones?\nWren: Two left."
        for s in range(sessions)
    ]
    (persona / "logs").mkdir(parents=True, exist_ok=True)
    (persona / "logs" / "chat.txt").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


@pytest.fixture()
def world(tmp_path: Path, base_model, monkeypatch):
    """A persona with a live v1, logs, and fakes for training (writes the next version) and scoring."""
    personas = tmp_path / "personas"
    persona = personas / NAME
    persona.mkdir(parents=True)
    (persona / "persona.yaml").write_text("training:\n  min_examples: 1\n")
    _logs(persona)
    write_version(persona, 1, base_model.hash)
    trained: list[dict] = []
    perplexity = {"v1": 10.0, "v2": 9.0, "card": 12.0}
    scored: list[tuple[str, bool]] = []  # (adapter folder, with the adapter on) of every scoring

    def fake_train(settings, name, config, *, examples, make_live, **kwargs):
        assert examples is not None and not make_live  # built once by the runner, gated after
        number = max(PersonaStore(settings.personas_dir).get(name).versions, default=0) + 1
        folder = write_version(persona, number, base_model.hash, live=False)
        meta = json.loads((folder / METADATA_FILE).read_text())
        meta.update(steps=3, duration_s=1.0, tokens_per_s=100.0, eval_loss_before=2.0, eval_loss_after=1.5)
        (folder / METADATA_FILE).write_text(json.dumps(meta))
        trained.append({"seed": config.seed})
        figures = {"steps": 3, "total_steps": 3, "train_loss": 1.2, "eval_loss_before": 2.0, "eval_loss_after": 1.5}
        return SimpleNamespace(version=number, tokens_per_s=100.0, tokens={"seen_tokens": 99}, epochs=2, **figures)

    class FakeScorer:
        def __init__(self, adapter: str) -> None:
            self.adapter = adapter

        @classmethod
        def load(cls, base_path, adapter_path=None, **kwargs):
            return cls(Path(adapter_path).name)

        def score(self, conversations, adapter: bool):
            assert conversations
            scored.append((self.adapter, adapter))
            return SimpleNamespace(perplexity=perplexity[self.adapter] if adapter else perplexity["card"])

    monkeypatch.setattr("training.runner.train_persona", fake_train)
    monkeypatch.setattr("training.fidelity.judge.Scorer", FakeScorer)
    where = ["--personas-dir", str(personas), "--base-model", str(base_model.path)]
    monkeypatch.setenv("PERSONA_CACHE_DIR", str(tmp_path / "cache"))
    return SimpleNamespace(personas=personas, persona=persona, trained=trained, perplexity=perplexity, where=where,
                           base=base_model, scored=scored)  # fmt: skip


def _train(world) -> str:
    result = CliRunner().invoke(app, ["train", NAME, *world.where])
    assert result.exit_code == 0, result.output
    return result.output


def _job(world):
    jobs = JobStore(world.personas)
    [job] = [j for j in jobs.all() if j.source == "cli"]
    return job, [e.message for e in jobs.events(job.id)]


def test_persona_train_without_a_worker_is_gated_and_prints_the_decision(world) -> None:
    output = _train(world)
    assert read_live(world.persona) == 2
    gate = read_gate(world.persona / "adapters" / "v2")
    assert gate.status == "live" and gate.compared_with == "v1" and not gate.error
    assert {c.figure for c in gate.checks} == {"perplexity", "card_perplexity"}
    assert any(m.startswith("style similarity: no server") for m in gate.missing)
    assert "gate: live (compared with live v1)" in output and "not measured: style similarity" in output
    assert "perplexity 9 vs live 10" in output and "perplexity 9 vs the prompt-only persona 12" in output
    job, events = _job(world)
    assert job.status == "succeeded" and job.outcome == "published" and job.version == 2
    assert job.used["seed"] == world.trained[0]["seed"] and job.used["epochs"] == 2

    world.perplexity["v3"] = 9.5  # worse than live v2 beyond the tolerance
    output = _train(world)
    assert read_live(world.persona) == 2
    gate = read_gate(world.persona / "adapters" / "v3")
    assert gate.status == "held back" and "worse than live v2" in gate.reasons[0]
    assert "held back by the fidelity gate" in output and "gate: held back" in output
    listed = CliRunner().invoke(app, ["list", "--personas-dir", str(world.personas)]).output
    assert "live: v2" in listed and "held back v3" in listed


def test_the_pin_skips_an_automatic_job_and_a_manual_run_publishes_beside_it(world) -> None:
    from training.job import JobSettings
    from training.runner import run_job

    set_pinned(world.persona, True)
    jobs = JobStore(world.personas)
    auto = jobs.create(NAME, "watcher", automatic=True)
    settings = JobSettings(personas_dir=world.personas, base_model=str(world.base.path))
    done = run_job(settings, auto.id)
    assert done.outcome == "unchanged" and not world.trained
    assert any("pinned" in e.message for e in jobs.events(auto.id))

    output = _train(world)
    assert read_live(world.persona) == 1 and (world.persona / "adapters" / "v2").is_dir()
    assert read_gate(world.persona / "adapters" / "v2").go_live
    assert "the pinned v1 stays live" in output
    assert _job(world)[0].outcome == "published"


class _Strict(BaseModel):
    n: int


def _validation_error() -> ValidationError:
    try:
        _Strict(n="many")
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize("error", [RuntimeError("scorer ran out of memory"), _validation_error()])
def test_an_evaluation_that_crashes_holds_the_version_back(world, monkeypatch, error) -> None:
    def crash(*args, **kwargs):
        raise error

    monkeypatch.setattr("training.fidelity.judge.perplexity_decision", crash)
    output = _train(world)
    assert read_live(world.persona) == 1
    gate = read_gate(world.persona / "adapters" / "v2")
    assert gate.status == "held back" and not gate.go_live and type(error).__name__ in gate.error
    job, events = _job(world)
    assert job.outcome == "held back"
    assert any("evaluation of v2 failed" in e and type(error).__name__ in e for e in events)
    assert "gate: held back" in output and "the evaluation failed" in output


def test_a_persona_too_small_to_judge_goes_live_unjudged(world) -> None:
    (world.persona / "persona.yaml").write_text("training:\n  min_examples: 1\n  heldout_fraction: 0.0\n")
    output = _train(world)
    assert read_live(world.persona) == 2
    gate = read_gate(world.persona / "adapters" / "v2")
    assert gate.status == "unjudged" and gate.go_live and "no held-out sessions" in gate.reasons[0]
    assert "gate: unjudged" in output
    listed = CliRunner().invoke(app, ["list", "--personas-dir", str(world.personas)]).output
    assert "live: v2 (unjudged)" in listed


def test_the_logs_are_parsed_once_per_job(world, monkeypatch) -> None:
    import training.ingest.build as build
    from training.job import JobSettings
    from training.runner import run_job

    calls = []
    real = build.load_logs
    monkeypatch.setattr(build, "load_logs", lambda folder: calls.append(folder) or real(folder))
    _logs(world.persona, sessions=13)  # changed since v1: an automatic job trains
    jobs = JobStore(world.personas)
    job = jobs.create(NAME, "watcher", automatic=True)
    done = run_job(JobSettings(personas_dir=world.personas, base_model=str(world.base.path)), job.id)
    assert done.outcome == "published" and len(calls) == 1


def test_a_first_version_goes_live_with_the_prompt_only_persona_s_figure_beside_it(world) -> None:
    import shutil

    shutil.rmtree(world.persona / "adapters")
    world.perplexity["v1"] = 15.0  # worse than the prompt-only persona's 12: shown, not held back
    output = _train(world)
    assert read_live(world.persona) == 1
    gate = read_gate(world.persona / "adapters" / "v1")
    assert gate.status == "live" and gate.compared_with is None
    [check] = gate.checks
    assert check.figure == "card_perplexity" and not check.passed
    assert "perplexity 15 vs the prompt-only persona 12 (limit 12.2): worse beyond the tolerance" in output


def _served_job(world, monkeypatch, report: Exception | None = None, **decision):
    """A job run with a server to evaluate through; the whole report is faked and notes which version
    was live while it was measured."""
    from store.fidelity_report import GateDecision
    from training.fidelity.evaluate import Evaluation
    from training.job import JobSettings
    from training.runner import run_job

    live_meanwhile = []

    def whole_report(self, version, url):
        live_meanwhile.append(read_live(world.persona))
        if report is not None:
            raise report
        return SimpleNamespace(gate=GateDecision(**{"go_live": True, "status": "live", **decision}))

    monkeypatch.setattr(Evaluation, "gate", whole_report)
    jobs = JobStore(world.personas)
    job = jobs.create(NAME, "api")
    settings = JobSettings(
        personas_dir=world.personas, base_model=str(world.base.path), eval_url="http://127.0.0.1:9/v1"
    )
    done = run_job(settings, job.id)
    return done, live_meanwhile, [e.message for e in jobs.events(job.id)]


def test_with_a_server_a_version_is_live_on_its_perplexity_while_its_whole_report_is_measured(
    world, monkeypatch
) -> None:
    done, live_meanwhile, events = _served_job(world, monkeypatch, compared_with="v1")
    assert live_meanwhile == [2]  # users talked to v2 while the rest of its report was measured
    assert read_live(world.persona) == 2 and done.outcome == "published"
    gate = read_gate(world.persona / "adapters" / "v2")
    assert gate.status == "live" and not gate.provisional and not gate.taken_back
    assert any("v2 is live (its held-out perplexity against live v1)" in e for e in events)
    assert world.scored == [("v2", True), ("v1", True)]  # the prompt-only persona waits for the report


def test_with_a_server_a_first_version_is_live_at_once_and_its_figures_follow(world, monkeypatch) -> None:
    import shutil

    shutil.rmtree(world.persona / "adapters")
    done, live_meanwhile, events = _served_job(world, monkeypatch)
    assert live_meanwhile == [1] and read_live(world.persona) == 1 and done.outcome == "published"
    assert world.scored == []  # nothing could hold it back, so nothing is scored before the report
    assert any("v1 is live (no live version to compare with); the whole report follows" in e for e in events)


def test_a_version_its_whole_report_holds_back_is_taken_back_to_the_one_live_before(world, monkeypatch) -> None:
    reason = "identity through held-out conversations 0.400 is below live v1's 0.700"
    done, live_meanwhile, events = _served_job(world, monkeypatch, go_live=False, status="held back", reasons=[reason])
    assert live_meanwhile == [2] and read_live(world.persona) == 1
    assert done.outcome == "held back"
    gate = read_gate(world.persona / "adapters" / "v2")
    assert gate.taken_back and gate.reasons[0] == reason and gate.reasons[-1].endswith("v1 is live again")
    assert any("v1 is live again" in e for e in events)


def test_a_first_version_whose_report_crashes_leaves_the_card_alone_live(world, monkeypatch) -> None:
    import shutil

    shutil.rmtree(world.persona / "adapters")
    done, live_meanwhile, _ = _served_job(world, monkeypatch, report=RuntimeError("server went away"))
    assert live_meanwhile == [1] and read_live(world.persona) is None
    gate = read_gate(world.persona / "adapters" / "v1")
    assert gate.status == "held back" and "server went away" in gate.error and gate.taken_back
    assert gate.reasons[-1].endswith("the card alone is live again") and done.outcome == "held back"


def test_a_version_worse_on_perplexity_never_goes_live_and_still_gets_its_report(world, monkeypatch) -> None:
    world.perplexity["v2"] = 11.0  # worse than live v1's 10 beyond the tolerance
    done, live_meanwhile, _ = _served_job(world, monkeypatch, go_live=False, status="held back", reasons=["worse"])
    assert live_meanwhile == [1] and read_live(world.persona) == 1 and done.outcome == "held back"
    assert not read_gate(world.persona / "adapters" / "v2").taken_back


def test_live_on_perplexity_off_waits_for_the_whole_report(world, monkeypatch) -> None:
    (world.persona / "persona.yaml").write_text(
        "training:\n  min_examples: 1\nfidelity:\n  gate:\n    live_on_perplexity: false\n"
    )
    done, live_meanwhile, _ = _served_job(world, monkeypatch, compared_with="v1")
    assert live_meanwhile == [1] and read_live(world.persona) == 2 and done.outcome == "published"
