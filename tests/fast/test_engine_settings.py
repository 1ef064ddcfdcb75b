"""The CPU engine's settings: dtype choice, thread binding, and refused values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.engine import cpu_environment, engine_dtype, preload_libraries
from service.settings import ServeSettings


def test_auto_dtype_is_bfloat16_on_gpus_and_float32_on_cpus() -> None:
    assert engine_dtype("auto", cuda=True) == "bfloat16"
    assert engine_dtype("auto", cuda=False) == "float32"
    assert engine_dtype("bfloat16", cuda=False) == "bfloat16"
    assert engine_dtype("float32", cuda=True) == "float32"


def test_cpu_engine_uses_every_core(tmp_path: Path) -> None:
    env = cpu_environment(ServeSettings(cache_dir=tmp_path, cpu_threads=4, kv_cache_gb=3))
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0-3"
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["OMP_NUM_THREADS"] == "4"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"


def test_preload_finds_tcmalloc_and_intel_openmp(tmp_path: Path) -> None:
    libs, prefix = tmp_path / "usr-lib", tmp_path / "venv"
    libs.mkdir()
    (prefix / "lib").mkdir(parents=True)
    assert preload_libraries(prefix, [str(libs)]) == []
    (libs / "libtcmalloc_minimal.so.4").touch()
    (prefix / "lib" / "libiomp5.so").touch()
    assert preload_libraries(prefix, [str(libs)]) == [
        str(libs / "libtcmalloc_minimal.so.4"),
        str(prefix / "lib" / "libiomp5.so"),
    ]


def test_preload_keeps_what_the_user_preloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.engine as engine

    monkeypatch.setattr(engine, "preload_libraries", lambda: ["/lib/libtcmalloc_minimal.so.4", "/venv/lib/libiomp5.so"])
    settings = ServeSettings(cache_dir=tmp_path)
    env = cpu_environment(settings, current={"LD_PRELOAD": "/opt/libmine.so:/other/libiomp5.so"})
    assert env["LD_PRELOAD"] == "/lib/libtcmalloc_minimal.so.4:/opt/libmine.so:/other/libiomp5.so"
    assert cpu_environment(settings, current={})["LD_PRELOAD"] == "/lib/libtcmalloc_minimal.so.4:/venv/lib/libiomp5.so"
    assert "LD_PRELOAD" not in cpu_environment(ServeSettings(cache_dir=tmp_path, cpu_preload=False), current={})


def test_unknown_dtype_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_DTYPE", "float8")
    with pytest.raises(ValidationError) as caught:
        ServeSettings(cache_dir=tmp_path)
    assert "dtype" in str(caught.value)
    assert "'auto', 'float32', 'bfloat16' or 'float16'" in str(caught.value)


def test_serve_with_a_bad_flag_names_it_and_its_variable(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(
        app,
        ["serve", "--dtype", "fp8", "--personas-dir", str(tmp_path)],
        env={"PERSONA_CACHE_DIR": str(tmp_path), "PERSONA_PORT": "0"},
    )
    assert result.exit_code == 1
    assert "--dtype / PERSONA_DTYPE" in result.output and "'fp8'" in result.output
    assert "--port / PERSONA_PORT" in result.output


def test_every_serve_setting_is_a_flag_with_its_description_and_variable() -> None:
    """A setting added to ServeSettings is a ``persona serve`` flag, documented by its description."""
    import re

    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(
        app, ["serve", "--help"], env={"COLUMNS": "400", "NO_COLOR": "1", "TERMINAL_WIDTH": "400"}
    )
    assert result.exit_code == 0, result.output
    text = re.sub(r"[\s│]+", " ", result.output)
    for name, field in ServeSettings.model_fields.items():
        flag, variable = "--" + name.replace("_", "-"), f"PERSONA_{name.upper()}"
        assert field.description, f"{name} has no description"
        assert f" {flag} " in text, flag
        assert variable in text, variable
        assert field.description.rstrip(".") in text, field.description
    assert "--cpu-preload --no-cpu-preload" in text and "--ui --no-ui" in text


def test_serve_flags_reach_the_settings_and_unset_flags_leave_the_environment(tmp_path: Path, monkeypatch) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from cli.main import app

    served = {}
    monkeypatch.setattr(
        uvicorn, "run", lambda application, **kwargs: served.update(settings=application.state.settings)
    )
    args = [
        "serve",
        "--max-loras",
        "3",
        "--no-cpu-preload",
        "--dtype",
        "float32",
        "--api-keys",
        "a",
        "--api-keys",
        "b",
        "--personas-dir",
        str(tmp_path),
        "--no-ui",
    ]
    env = {"PERSONA_CACHE_DIR": str(tmp_path), "PERSONA_MAX_NUM_SEQS": "5", "PERSONA_MAX_LORAS": "7"}
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    settings = served["settings"]
    assert (settings.max_loras, settings.cpu_preload, settings.dtype, settings.api_keys) == (
        3,
        False,
        "float32",
        ["a", "b"],
    )
    assert settings.max_num_seqs == 5, "a setting without its flag comes from the environment"
    assert settings.personas_dir == tmp_path and settings.ui is False


def test_warming_starts_the_engine_answers_greedily_and_stops_it(tmp_path: Path, base_model) -> None:
    import asyncio

    from service.warmup import warm_engine

    from .fake_engine import FakeEngine

    engine = FakeEngine()
    settings = ServeSettings(cache_dir=tmp_path, base_model=str(base_model.path))
    warmed = asyncio.run(warm_engine(settings, lambda s, b: engine))
    assert warmed.reply.startswith("[base]") and warmed.start_s >= 0 and warmed.first_reply_s >= 0
    [(prompt, params, adapter)] = engine.calls
    assert prompt and all(isinstance(token, int) for token in prompt)  # token ids, as vLLM takes them
    assert params.temperature == 0 and adapter is None
    assert not engine.started  # nothing left running after the set-up
