"""The CPU LoRA plugin's switch: the server setting reaches vLLM's processes, and the plugin acts
only when asked and only on vLLM's CPU platform (a stand-in for vLLM's platform module here)."""

from __future__ import annotations

import enum
import sys
import types
from pathlib import Path

import pytest
import torch

from service.engine import adapter_dtype, cpu_environment, engine_cache_dir, lora_plugin_environment
from service.lora_cpu import SWITCH, WEIGHTS_SWITCH
from service.lora_cpu.compile_cache import complete
from service.lora_cpu.plugin import WRAPPER, register
from service.settings import ServeSettings


def test_setting_turns_the_plugin_on_and_off(tmp_path: Path, monkeypatch) -> None:
    switch, defaults = lora_plugin_environment(ServeSettings(cache_dir=tmp_path))
    assert switch == {SWITCH: "1", WEIGHTS_SWITCH: "int8"}
    assert defaults["VLLM_USE_AOT_COMPILE"] == "1"  # later starts load the model the first one compiled
    assert Path(defaults["VLLM_CACHE_ROOT"]).is_relative_to(tmp_path), "kept in the service's own cache folder"
    assert lora_plugin_environment(ServeSettings(cache_dir=tmp_path, fast_lora=False)) == ({SWITCH: "0"}, {})
    for weights in ("float16", "float32"):
        chosen = ServeSettings(cache_dir=tmp_path, adapter_weights=weights)
        assert lora_plugin_environment(chosen)[0][WEIGHTS_SWITCH] == weights
    monkeypatch.setenv("PERSONA_FAST_LORA", "false")
    assert lora_plugin_environment(ServeSettings(cache_dir=tmp_path))[0] == {SWITCH: "0"}


def test_a_float32_cpu_engine_keeps_adapters_in_bfloat16_for_the_kernel(tmp_path: Path) -> None:
    from vllm.config import LoRAConfig

    def kept(cuda: bool = False, **fields) -> str:
        chosen = adapter_dtype(ServeSettings(cache_dir=tmp_path, **fields), cuda=cuda)
        LoRAConfig(lora_dtype=chosen)  # an argument the engine takes
        return chosen

    assert kept() == "bfloat16"
    assert kept(adapter_weights="float16") == "bfloat16"
    assert kept(adapter_weights="float32") == "auto", "float32, as the engine"
    assert kept(fast_lora=False) == "auto", "vLLM's own ops"
    assert kept(cuda=True) == "auto", "a GPU engine's own dtype"


def test_each_processor_gets_its_own_compiled_model(tmp_path: Path) -> None:
    settings = ServeSettings(cache_dir=tmp_path)

    def cpu(name: str, flags: str) -> Path:
        info = tmp_path / f"{name}.cpuinfo"
        block = f"processor\t: 0\nmodel name\t: {name}\nflags\t\t: {flags}\n"
        info.write_text(block + "\n" + block.replace(": 0", ": 1"))
        return info

    avx2 = engine_cache_dir(settings, cpu("EPYC", "fpu sse avx2"))
    assert avx2 == engine_cache_dir(settings, cpu("EPYC", "fpu sse avx2")), "the same CPU finds its cache again"
    assert avx2 != engine_cache_dir(settings, cpu("EPYC", "fpu sse avx2 avx512f")), (
        "code for AVX-512 never runs on AVX2"
    )
    assert avx2 != engine_cache_dir(settings, cpu("Xeon", "fpu sse avx2"))


def test_a_loaded_inductor_function_gets_the_loading_step_vllm_calls() -> None:
    def inductor_function(*args):
        return args

    class VllmOwn:
        def finalize_loading(self, config) -> str:
            return "vLLM's own"

    def loaded(compiled):
        return types.SimpleNamespace(_artifacts=types.SimpleNamespace(compiled_fn=compiled))

    completed = complete(loaded(inductor_function))._artifacts.compiled_fn
    assert completed is inductor_function and completed.finalize_loading(object()) is None
    assert complete(loaded(VllmOwn()))._artifacts.compiled_fn.finalize_loading(None) == "vLLM's own"


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


class Sorted:
    """vLLM's top-k/top-p filter in miniature: it counts the rows it is given."""

    def __init__(self) -> None:
        self.rows = 0

    def __call__(self, logits, k, p):
        self.rows += logits.shape[0]
        return logits


@pytest.fixture()
def sampler(monkeypatch):
    module = types.ModuleType("vllm.v1.sample.ops.topk_topp_sampler")
    module.apply_top_k_top_p = Sorted()
    ops = types.SimpleNamespace(topk_topp_sampler=module)
    for name, value in [("vllm.v1", types.ModuleType("vllm.v1")), ("vllm.v1.sample", types.ModuleType("s"))]:
        monkeypatch.setitem(sys.modules, name, value)
    monkeypatch.setitem(sys.modules, "vllm.v1.sample.ops", ops)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


@pytest.fixture()
def platform(monkeypatch, request, sampler):
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
def test_on_the_cpu_it_swaps_the_wrapper_and_keeps_the_model_compiled(platform, sampler, monkeypatch) -> None:
    original = sampler.apply_top_k_top_p
    monkeypatch.setenv(SWITCH, "1")
    register()
    register()  # vLLM may load plugins more than once in a process
    assert platform.get_punica_wrapper() == WRAPPER
    flat, peaked = torch.zeros(1, 1000), torch.arange(1000.0).unsqueeze(0)
    sampler.apply_top_k_top_p(torch.cat([flat, peaked]), None, torch.tensor([0.9, 0.9]))
    assert original.rows == 1, "top-p goes through the plugin's filter, once, and only the flat row is sorted"
    compiled = config(CompilationMode.VLLM_COMPILE, lora=True)
    platform.check_and_update_config(compiled)
    assert compiled.compilation_config.mode == CompilationMode.DYNAMO_TRACE_ONCE
    eager = config(CompilationMode.NONE, lora=True)  # enforce_eager stays eager
    platform.check_and_update_config(eager)
    assert eager.compilation_config.mode == CompilationMode.NONE


@pytest.mark.parametrize("platform", [True], indirect=True)
def test_without_the_switch_vllm_is_untouched(platform, sampler, monkeypatch) -> None:
    original = sampler.apply_top_k_top_p
    monkeypatch.setenv(SWITCH, "0")
    register()
    assert platform.get_punica_wrapper() != WRAPPER and sampler.apply_top_k_top_p is original
    compiled = config(CompilationMode.VLLM_COMPILE, lora=True)
    platform.check_and_update_config(compiled)
    assert compiled.compilation_config.mode == CompilationMode.NONE


@pytest.mark.parametrize("platform", [False], indirect=True)
def test_never_on_a_gpu_build(platform, monkeypatch) -> None:
    monkeypatch.setenv(SWITCH, "1")
    register()
    assert platform.get_punica_wrapper() != WRAPPER
