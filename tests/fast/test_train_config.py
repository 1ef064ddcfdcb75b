"""Training settings: defaults, persona.yaml and flag overrides, validation messages, automatic epochs,
and the one model they come from (its docstrings are the flags' help)."""

from __future__ import annotations

import pytest

from training.config import LINEAR_MODULES, ConfigError, TrainConfig, example_keys


def test_defaults_are_a_rank_16_lora_on_every_linear_layer():
    config = TrainConfig()
    assert (config.lora_r, config.lora_alpha) == (16, 32.0)
    assert config.target_modules == LINEAR_MODULES
    assert set(LINEAR_MODULES) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert config.epochs is None and config.qlora is False and config.load_in_8bit is False
    assert isinstance(config.seed, int)  # seeded by default: the same data gives the same adapter
    # every speed-up is on and every memory saver off unless asked
    assert config.fused_lora and config.head_on_trained_positions and config.shared_dropout
    assert config.fast_dropout and config.tune_allocator and not config.gradient_checkpointing


def test_unset_bf16_means_on_for_a_cpu_with_amx_and_a_set_value_wins():
    assert TrainConfig().bf16 is None
    assert TrainConfig().resolve_bf16(cuda=False, amx_bf16=True) is True
    assert TrainConfig().resolve_bf16(cuda=False, amx_bf16=False) is False
    assert TrainConfig().resolve_bf16(cuda=True, amx_bf16=True) is False
    assert TrainConfig(bf16=False).resolve_bf16(cuda=False, amx_bf16=True) is False
    assert TrainConfig(bf16=True).resolve_bf16(cuda=True, amx_bf16=False) is True


def test_card_overrides_then_flags_win():
    config = TrainConfig.from_overrides(
        {"lora_r": 8, "learning_rate": 1e-4, "epochs": 2, "target_modules": ["q_proj", "v_proj"]},
        {"learning_rate": 3e-4, "max_steps": None, "qlora": True},
    )
    assert config.lora_r == 8
    assert config.learning_rate == 3e-4  # the flag wins over the card
    assert config.epochs == 2 and config.max_steps is None and config.qlora is True
    assert config.target_modules == ("q_proj", "v_proj")


def test_yaml_spellings_are_accepted():
    config = TrainConfig.from_overrides(
        {"lora_alpha": 16, "target_modules": "q_proj, k_proj", "epochs": None},
        {"learning_rate": "5e-4", "lora_r": "4", "qlora": "yes"},
    )
    assert config.lora_alpha == 16.0 and isinstance(config.lora_alpha, float)
    assert config.target_modules == ("q_proj", "k_proj")
    assert config.learning_rate == 5e-4 and config.lora_r == 4 and config.qlora is True


def test_example_building_keys_are_left_to_ingest():
    config = TrainConfig.from_overrides(
        {
            "window": 4,
            "heldout_fraction": 0.2,
            "min_examples": 5,
            "session_gap_hours": 2,
            "name_prefixes": False,
            "lora_r": 4,
        }
    )
    assert config.lora_r == 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lora_r": 0}, "persona.yaml: training.lora_r: must be a positive integer"),
        ({"lora_r": 2.5}, "persona.yaml: training.lora_r: must be a positive integer"),
        ({"lora_r": True}, "persona.yaml: training.lora_r: must be a positive integer"),
        ({"lora_dropout": 1.0}, "persona.yaml: training.lora_dropout: must be a number at least 0 and below 1"),
        ({"learning_rate": -1}, "persona.yaml: training.learning_rate: must be a number above 0"),
        ({"learning_rate": "fast"}, "persona.yaml: training.learning_rate: must be a number"),
        ({"epochs": 0}, "persona.yaml: training.epochs: must be a positive integer or null"),
        ({"target_modules": []}, "persona.yaml: training.target_modules: must be a non-empty list"),
        (
            {"target_modules": ["q_proj", "lm_head"]},
            "persona.yaml: training.target_modules: the server can only adapt q_proj",
        ),
        (
            {"target_modules": ["qkv"]},
            "persona.yaml: training.target_modules: the server can only adapt q_proj, k_proj, v_proj, o_proj, "
            "gate_proj, up_proj, down_proj; got ['qkv']",
        ),
        ({"target_modules": 3}, "persona.yaml: training.target_modules: must be a list of module names"),
        ({"qlora": "maybe"}, "persona.yaml: training.qlora: must be true or false"),
        ({"max_seq_length": 8}, "persona.yaml: training.max_seq_length: must be an integer of at least 16"),
        ({"early_stopping_patience": -1}, "persona.yaml: training.early_stopping_patience: must be a whole number"),
        ({"lora_rank": 8}, "persona.yaml: training.lora_rank: unknown setting"),
        ({"synthetic_weight": 1.5}, "persona.yaml: training.synthetic_weight: must be a number at least 0 and at"),
        ({"replay_share": 1}, "persona.yaml: training.replay_share: must be a number at least 0 and below 1"),
        ({"replay_share": "lots"}, "persona.yaml: training.replay_share: must be a number"),
    ],
)
def test_card_errors_name_the_field(overrides, message):
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_overrides(overrides, {})
    assert str(caught.value).startswith(message)


def test_generated_examples_weigh_less_than_real_ones_and_replay_is_on_by_default():
    config = TrainConfig()
    assert 0 < config.synthetic_weight < 1 and 0 < config.replay_share < 1
    off = TrainConfig.from_overrides({"synthetic_weight": 0}, {"replay_share": 0.0})
    assert off.synthetic_weight == 0 and off.replay_share == 0
    assert off.fingerprint() != config.fingerprint()  # a checkpoint is not resumed on another mix


def test_flag_errors_name_the_flag():
    with pytest.raises(ConfigError, match=r"^--batch-tokens: must be a positive integer"):
        TrainConfig.from_overrides({}, {"batch_tokens": -5})
    with pytest.raises(ConfigError, match=r"^--warp-speed: unknown training setting"):
        TrainConfig.from_overrides({}, {"warp_speed": 9})


def test_a_flag_fixing_a_card_value_is_fine_and_card_label_is_used():
    assert TrainConfig.from_overrides({"lora_r": 0}, {"lora_r": 8}).lora_r == 8
    with pytest.raises(ConfigError, match=r"^/p/wren/persona.yaml: training.seed: "):
        TrainConfig.from_overrides({"seed": -1}, {}, card_label="/p/wren/persona.yaml")
    with pytest.raises(ConfigError, match="training: must be a mapping"):
        TrainConfig.from_overrides(["lora_r"], {})


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match="^lora_r: "):
        TrainConfig(lora_r=-1)
    assert TrainConfig().replace(lora_r=4).lora_r == 4
    with pytest.raises(ConfigError, match="^threads: "):
        TrainConfig().replace(threads=0)


def test_auto_epochs_are_a_cap_that_learning_and_the_time_budget_end():
    config = TrainConfig()
    assert config.epochs is None and config.automatic_length
    assert config.resolve_epochs() == config.max_auto_epochs > 5  # a generous cap, not a token count
    assert config.resolve_time_budget() == config.time_budget_s == 600
    assert TrainConfig(time_budget_s=None).resolve_time_budget() is None
    with pytest.raises(ConfigError, match="time_budget_s"):
        TrainConfig(time_budget_s=0)


def test_explicit_epochs_win_and_have_no_time_budget():
    assert TrainConfig(epochs=7).resolve_epochs() == 7
    assert TrainConfig(epochs=7).resolve_time_budget() is None
    assert TrainConfig(max_auto_epochs=2).resolve_epochs() == 2


def test_eval_every_defaults_to_half_an_epoch_and_threads_to_the_cores():
    assert TrainConfig().resolve_eval_every(14) == 7
    assert TrainConfig().resolve_eval_every(1) == 1
    assert TrainConfig(eval_every=3).resolve_eval_every(100) == 3
    assert TrainConfig().resolve_threads() >= 1
    assert TrainConfig(threads=1).resolve_threads() == 1


def test_fingerprint_ignores_run_length_and_reporting():
    a = TrainConfig(max_steps=5, eval_every=2, threads=1, checkpoint_every=1, time_budget_s=60).fingerprint()
    assert a == TrainConfig().fingerprint()
    assert TrainConfig(lora_r=8).fingerprint() != TrainConfig().fingerprint()
    assert TrainConfig().to_dict()["target_modules"] == list(LINEAR_MODULES)


def test_every_setting_is_documented_by_its_docstring():
    for name, field in TrainConfig.model_fields.items():
        assert field.description and len(field.description) > 20, name


def test_every_setting_is_a_flag_of_persona_train_with_its_doc_as_help():
    import typer.main

    from cli.main import app

    command = typer.main.get_command(app).commands["train"]
    options = {opt: param for param in command.params for opt in param.opts}
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in options, flag
        assert options[flag].help.startswith(" ".join(field.description.split())), flag
        if field.annotation is bool:
            assert "--no-" + flag[2:] in options[flag].secondary_opts


def test_flags_reach_the_settings_with_their_names_in_errors(tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    (tmp_path / "echo" / "logs").mkdir(parents=True)
    result = CliRunner().invoke(
        app, ["train", "echo", "--personas-dir", str(tmp_path), "--lora-dropout", "1.5", "--no-fused-lora"]
    )
    assert result.exit_code == 1
    assert "--lora-dropout: must be a number at least 0 and below 1, got 1.5" in result.output


def test_example_keys_are_the_fields_example_building_reads():
    from training.ingest import ExampleSettings

    assert example_keys() == {"window", "session_gap_hours", "heldout_fraction", "min_examples", "name_prefixes"}
    defaults = ExampleSettings()
    changed = {"window": 2, "session_gap_hours": 1, "heldout_fraction": 0.3, "min_examples": 1, "name_prefixes": False}
    assert changed.keys() == example_keys()
    for key, value in changed.items():
        assert ExampleSettings.from_overrides({key: value}) != defaults, key


def test_one_quantized_base_at_a_time_and_every_bad_field_is_named():
    with pytest.raises(ConfigError, match=r"^persona.yaml: training.load_in_8bit: load the base in 4-bit"):
        TrainConfig.from_overrides({"qlora": True, "load_in_8bit": True})
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_overrides({"lora_r": 0}, {"seed": -1})
    assert str(caught.value) == (
        "persona.yaml: training.lora_r: must be a positive integer, got 0; "
        "--seed: must be a whole number of at least 0, got -1"
    )
    with pytest.raises(ConfigError, match=r"^learning_rate: must be a number above 0 and at most 1, got nan"):
        TrainConfig(learning_rate=float("nan"))
