"""The ``vllm.general_plugins`` entry point: vLLM calls :func:`register` in each of its processes.

It changes nothing unless the process's environment asks for it (``PERSONA_FAST_LORA=1``) and vLLM
runs on its CPU platform: a GPU build keeps vLLM's own (already grouped) kernels, and vLLM's own
server started without the variable is untouched. When on, the CPU platform names this project's
punica wrapper and keeps the model compiled when LoRA is enabled (the CPU platform turns compilation
off for LoRA because its own ops cannot be traced once), its sampler filters top-k and top-p
without sorting the vocabulary (:mod:`.top_p`), and a later start loads the compiled model that the
first one saved (:mod:`.compile_cache`).
"""

from __future__ import annotations

import logging
import os

from . import requested

logger = logging.getLogger("vllm.plugins.persona_lora_cpu")
"""Under vLLM's logger, so the line shows in the engine's log with vLLM's own."""

WRAPPER = "service.lora_cpu.punica.PunicaWrapperGroupedCPU"


def register() -> None:
    if not requested(os.environ):
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    platform = type(current_platform)
    if getattr(platform, "_persona_lora", False):
        return  # plugins may be loaded more than once in a process
    original_check = platform.check_and_update_config.__func__

    def get_punica_wrapper(cls) -> str:
        return WRAPPER

    def check_and_update_config(cls, vllm_config) -> None:
        from vllm.config import CompilationMode

        compiling = vllm_config.compilation_config.mode in (
            CompilationMode.VLLM_COMPILE,
            CompilationMode.DYNAMO_TRACE_ONCE,
        )
        original_check(cls, vllm_config)
        if compiling and vllm_config.lora_config is not None:
            vllm_config.compilation_config.mode = CompilationMode.DYNAMO_TRACE_ONCE

    platform.get_punica_wrapper = classmethod(get_punica_wrapper)
    platform.check_and_update_config = classmethod(check_and_update_config)
    platform._persona_lora = True
    from . import compile_cache, top_p

    top_p.install()
    compile_cache.install()
    logger.info(
        "persona LoRA plugin: grouped CPU LoRA ops, model compiled with LoRA and loaded compiled at later "
        "starts, top-p without a full sort"
    )
