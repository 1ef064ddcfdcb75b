"""Builds and loads the packed LoRA kernel (``kernels/``) once per processor.

A decoding step reads every adapter in use, and on the CPU those reads are most of what LoRA costs:
kept in int8 (a scale per row) or float16 and widened in registers, an adapter costs a quarter or
half the bytes of its float32 copy, without the zero blocks of the fused float32 layout. The kernel
is compiled for the machine's own instructions (``-march=native``) by the C++ compiler that vLLM's
CPU engine needs anyway, into the engine's cache folder (one per processor); a later start loads it.
It is compiled with OpenMP: ATen's parallel loops are inline templates, which run on one thread in
code compiled without it.
Where it cannot be built, the LoRA ops keep their float32 copies and say so in the engine's log.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from . import ADAPTER_WEIGHTS
from . import WEIGHTS_SWITCH as SWITCH

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("vllm.plugins.persona_lora_cpu")

NAME = "persona_lora_kernels"
SOURCES = [Path(__file__).parent / "kernels" / name for name in ("lora_packed.cpp", "lora_step.cpp")]

STALE_LOCK_S = 300
"""A build lock older than this was left by a start stopped mid-build: torch's builder would wait on
it for ever, so it is removed (a build takes seconds)."""

LOADED = "packed LoRA kernel loaded"
"""The start of the engine log's line when the kernel is in use."""


def requested(environ: Mapping[str, str]) -> str:
    """The adapter weights ``environ`` asks for (one of ``ADAPTER_WEIGHTS``; unset or unknown: the first)."""
    value = environ.get(SWITCH, "").strip().lower()
    return value if value in ADAPTER_WEIGHTS else ADAPTER_WEIGHTS[0]


def build_dir(environ: Mapping[str, str]) -> Path:
    """The engine's cache folder (the server keeps one per processor), else a folder of this user's."""
    root = environ.get("VLLM_CACHE_ROOT")
    base = Path(root) if root else Path(tempfile.gettempdir()) / f"persona-{os.getuid()}"
    return base / "lora-kernel"


def load(environ: Mapping[str, str] | None = None) -> torch.dtype | None:
    """Builds the kernel where needed and loads it into this process (once): the dtype float32 layers'
    adapters are kept in for it, or None for float32 copies (asked for, or logged where it cannot be
    built)."""
    import torch

    environ = os.environ if environ is None else environ
    weights = requested(environ)
    if weights == "float32":
        return None
    dtype = torch.int8 if weights == "int8" else torch.float16
    if hasattr(getattr(torch.ops, NAME), "add_lora_packed") or _build_and_load(build_dir(environ), weights):
        return dtype
    return None


def _build_and_load(directory: Path, weights: str) -> bool:
    from torch.utils.cpp_extension import load as load_extension

    scripts = Path(sys.executable).parent  # a virtual environment's own ninja, where PATH lacks it
    if shutil.which("ninja") is None and (scripts / "ninja").exists():
        os.environ["PATH"] = f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _remove_stale_lock(directory / "lock")
        load_extension(
            name=NAME,
            sources=[str(source) for source in SOURCES],
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            build_directory=str(directory),
            is_python_module=False,
        )
    except Exception as error:  # no compiler, a read-only cache: fall back, loudly
        logger.warning("packed LoRA kernel not built (%s); adapters are kept in float32", error)
        return False
    logger.info("%s: float32 layers keep their adapters in %s (kernel in %s)", LOADED, weights, directory)
    return True


def _remove_stale_lock(lock: Path) -> None:
    try:
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            lock.unlink(missing_ok=True)
            logger.warning("removed a stale build lock left by an interrupted start: %s", lock)
    except FileNotFoundError:
        pass
