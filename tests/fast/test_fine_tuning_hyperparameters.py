"""OpenAI's hyperparameters are translated at the API edge into the settings any run uses, and the
jobs API reports what the run really used (a seed set in the card included)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from fastapi.testclient import TestClient
from openai.types.fine_tuning import FineTuningJob

from .fake_store import write_version
from .test_fine_tuning_api import _create, _lines, _upload_id, client  # noqa: F401  (the fixture)


def test_the_card_s_seed_is_reported_and_the_multiplier_scales_the_persona_s_rate(
    client: TestClient,  # noqa: F811
    tmp_path: Path,
    base_model,
    monkeypatch,
) -> None:
    from store.jobs import JobStore
    from training.job import JobSettings
    from training.runner import run_job

    persona = tmp_path / "personas" / "nova"
    persona.mkdir(parents=True)
    (persona / "persona.yaml").write_text("training:\n  seed: 77\n  learning_rate: 1.0e-3\n")
    hyper = {"n_epochs": "auto", "batch_size": 4, "learning_rate_multiplier": 2.0}
    job = _create(client, training_file=_upload_id(client, _lines(24), "nova.jsonl"), hyperparameters=hyper)
    assert job.seed == 77
    record = JobStore(tmp_path / "personas").get(job.id)
    assert record.overrides == {"batch_tokens": 4 * 256, "learning_rate": 2.0e-3}

    used = []

    def fake_train(settings, name, config, **kwargs):
        used.append(config)
        write_version(persona, 1, base_model.hash, live=False)
        return SimpleNamespace(version=1, steps=1, total_steps=1, train_loss=1.0, eval_loss_before=None,
                               eval_loss_after=None, tokens_per_s=1.0, tokens={}, epochs=3)  # fmt: skip

    monkeypatch.setattr("training.runner.train_persona", fake_train)
    run_job(JobSettings(personas_dir=tmp_path / "personas", base_model=str(base_model.path)), job.id)
    [config] = used
    assert (config.seed, config.learning_rate, config.batch_tokens) == (77, 2.0e-3, 1024)
    done = FineTuningJob.model_validate(client.get(f"/v1/fine_tuning/jobs/{job.id}").json())
    assert done.status == "succeeded" and done.seed == 77
    assert done.hyperparameters.n_epochs == 3 and done.hyperparameters.batch_size == 4


def test_a_seed_in_the_request_wins_over_the_card_s(client: TestClient, tmp_path: Path) -> None:  # noqa: F811
    persona = tmp_path / "personas" / "nova"
    persona.mkdir(parents=True)
    (persona / "persona.yaml").write_text("training:\n  seed: 77\n")
    job = _create(client, training_file=_upload_id(client, _lines(24), "nova.jsonl"), seed=5)
    assert job.seed == 5
