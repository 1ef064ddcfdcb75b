"""Calls the server makes on vLLM's workers (``worker_extension_cls``, reached by ``collective_rpc``).

Imported in the engine's own processes; it must stay free of the server's imports.
"""

from __future__ import annotations


class PersonaWorkerCalls:
    """Mixed into each vLLM worker by name, so its methods run where the adapters are kept."""

    def pin_adapter_in_memory(self, lora_id: int) -> bool:
        """Keep a loaded adapter in the worker's adapter cache for good, without holding a batch slot.

        vLLM's own ``pin_lora`` also pins the adapter in one of the ``max_loras`` batch slots, which its
        scheduler does not know about: it still admits ``max_loras`` other adapters into one batch, and
        loading them evicts one that the same batch needs, which kills the engine. Pinned in memory only,
        the adapter is never evicted or read from disk again and takes a slot like any other when its
        request runs.
        """
        manager = self.model_runner.lora_manager._adapter_manager  # type: ignore[attr-defined]
        manager._pin_lora_in_cpu_cache(lora_id)  # the half of vLLM's pin_adapter without the slot
        return True
