"""The CPU LoRA plugin's switch: the server setting reaches vLLM's processes, and the plugin acts
only when asked and only on vLLM's CPU platform (a stand-in for vLLM's platform module here)."""

from __future__ import annotations

import enum
import sys
import types
from pathlib import Path

import pytest

from service.engine import cpu_environment, lora_plugin_environment
from service.lora_cpu import SWITCH
from service.lora_cpu.plugin import WRAPPER, register
from service.settings import ServeSettings


def test_setting_turns_the_plugin_on_and_off(tmp_path: Path, monkeypatch) -> None:
    switch, defaults = lora_plugin_environment(ServeSettings(cache_dir=tmp_path))
    assert switch == {SWITCH: "1"}
    assert defaults == {"VLLM_USE_AOT_COMPILE": "0"}  # restarts reuse torch's compile cache
    assert lora_plugin_environment(ServeSettings(cache_dir=tmp_path, fast_lora=False)) == ({SWITCH: "0"}, {})
    monkeypatch.setenv("PERSONA_FAST_LORA", "false")
    assert lora_plugin_environment(ServeSettings(cache_dir=tmp_path))[0] == {SWITCH: "0"}


def test_settings_given_to_vllms_own_server_leave_the_plugin_off(tmp_path: Path) -> None:
    assert SWITCH not in cpu_environment(ServeSettings(cache_dir=tmp_path))


class CompilationMode(enum.Enum):
    NONE = 0
    VLLM_COMPILE = 3
    DYNAMO_TRACE_ONCE = 2


def fake_platform(cpu: bool):
    """vLLM's CPU platform in miniature: it turns compilation off once LoRA is enabled."""

    class Platform:
        @classmethod
        def is_cpu(cls) -> bool:
            return cpu

        @classmethod
        def get_punica_wrapper(cls) -> str:
            return "vllm.lora.punica_wrapper.punica_cpu.PunicaWrapperCPU"

        @classmethod
        def check_and_update_config(cls, vllm_config) -> None:
            if vllm_config.compilation_config.mode == CompilationMode.VLLM_COMPILE:
                vllm_config.compilation_config.mode = CompilationMode.DYNAMO_TRACE_ONCE
            if vllm_config.lora_config is not None:
                vllm_config.compilation_config.mode = CompilationMode.NONE

    return Platform()


@pytest.fixture()
def platform(monkeypatch, request):
    current = fake_platform(cpu=request.param)
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setitem(sys.modules, "vllm.platforms", types.SimpleNamespace(current_platform=current))
    monkeypatch.setitem(sys.modules, "vllm.config", types.SimpleNamespace(CompilationMode=CompilationMode))
    return current


def config(mode: CompilationMode, lora: bool):
    return types.SimpleNamespace(
        compilation_config=types.SimpleNamespace(mode=mode), lora_config=object() if lora else None
    )


@pytest.mark.parametrize("platform", [True], indirect=True)
def test_on_the_cpu_it_swaps_the_wrapper_and_keeps_the_model_compiled(platform, monkeypatch) -> None:
    monkeypatch.setenv(SWITCH, "1")
    register()
    register()  # vLLM may load plugins more than once in a process
    assert platform.get_punica_wrapper() == WRAPPER
    compiled = config(CompilationMode.VLLM_COMPILE, lora=True)
    platform.check_and_update_config(compiled)
    assert compiled.compilation_config.mode == CompilationMode.DYNAMO_TRACE_ONCE
    eager = config(CompilationMode.NONE, lora=True)  # enforce_eager stays eager
    platform.check_and_update_config(eager)
    assert eager.compilation_config.mode == CompilationMode.NONE


@pytest.mark.parametrize("platform", [True], indirect=True)
def test_without_the_switch_vllm_is_untouched(platform, monkeypatch) -> None:
    monkeypatch.setenv(SWITCH, "0")
    register()
    assert platform.get_punica_wrapper() != WRAPPER
    compiled = config(CompilationMode.VLLM_COMPILE, lora=True)
    platform.check_and_update_config(compiled)
    assert compiled.compilation_config.mode == CompilationMode.NONE


@pytest.mark.parametrize("platform", [False], indirect=True)
def test_never_on_a_gpu_build(platform, monkeypatch) -> None:
    monkeypatch.setenv(SWITCH, "1")
    register()
    assert platform.get_punica_wrapper() != WRAPPER
