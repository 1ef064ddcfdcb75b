"""Later starts load the model compiled at the first one instead of tracing and compiling it again.

vLLM saves the model it compiles ahead of time and loads it at the next start, but its loader
finishes the load with a step (``finalize_loading``) that only vLLM's own compiler backend has; the
single trace its CPU platform compiles with goes through inductor, whose loaded function is whole
already and lacks that step, so the load fails and every start traces and compiles again. This gives
such a function the step, as a no-op. The compiled code is specific to the CPU's instructions: the
server keeps it in a folder of its own per CPU (:func:`service.engine.engine_cache_dir`).
"""

from __future__ import annotations

from typing import Any

_MARK = "_persona_loads_whole"


def loaded_whole(vllm_config: Any) -> None:
    """Nothing is left to load: inductor's function was deserialized whole."""


def complete(loaded: Any) -> Any:
    """``loaded`` (torch's loaded compiled function), its compiled function given the no-op step if
    it has none; left as it is where that cannot be done (vLLM then compiles again, as before)."""
    compiled = getattr(getattr(loaded, "_artifacts", None), "compiled_fn", None)
    if compiled is not None and not hasattr(compiled, "finalize_loading"):
        try:
            compiled.finalize_loading = loaded_whole
        except (AttributeError, TypeError):
            pass
    return loaded


def install() -> None:
    """Wrap torch's loader of compiled functions in this process (once)."""
    import torch.compiler

    original = torch.compiler.load_compiled_function
    if getattr(original, _MARK, False):
        return

    def load_compiled_function(*args: Any, **kwargs: Any) -> Any:
        return complete(original(*args, **kwargs))

    setattr(load_compiled_function, _MARK, True)
    torch.compiler.load_compiled_function = load_compiled_function
