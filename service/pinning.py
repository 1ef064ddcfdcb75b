"""Pinned personas' adapters kept loaded in the engine, and adapter loads and evictions counted.

A card with ``serving: {pinned: true}`` has its live adapter loaded and pinned when the server starts
and again when a new version is first asked for, so the personas a site features are never evicted
by quieter ones. Loads and evictions are what the engine reports holding, compared between
observations (each ``/metrics`` scrape and each pin): an adapter loaded and evicted between two
observations is not seen. A pinned adapter stays in the engine's memory but takes a batch slot only
while its requests run; the engine refuses a pin (``pin`` returns False) that would leave no room in
memory for a full batch of others, and that persona is served unpinned. An engine without ``pin``
or ``loaded_adapters`` (the fake one in tests may have neither) is simply not pinned or counted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from store.catalog import Catalog

from .errors import APIError
from .metrics import Metrics
from .resolver import ModelResolver, Target

log = logging.getLogger("persona.pinning")


class AdapterPins:
    def __init__(self, engine: Any, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self.pinned: dict[int, str] = {}
        """LoRA id to the adapter's name, for every adapter pinned in this server's life."""
        self.refused: set[int] = set()
        """Adapters the engine had no room for or failed to pin: served unpinned, not asked again."""
        self._seen: set[int] | None = None
        self._lock = asyncio.Lock()

    async def ensure(self, target: Target) -> None:
        """Pin the target's adapter when its card asks for it and it is not pinned yet."""
        adapter = target.adapter
        if adapter is None or target.persona is None or not target.persona.card.serving.pinned:
            return
        pin = getattr(self.engine, "pin", None)
        if pin is None or adapter.lora_id in self.pinned or adapter.lora_id in self.refused:
            return
        async with self._lock:
            if adapter.lora_id in self.pinned or adapter.lora_id in self.refused:
                return
            try:
                pinned = await pin(adapter)
            except Exception:  # a pin is a speed-up: the request is served without it
                self.refused.add(adapter.lora_id)
                log.exception("pinning adapter %s failed", adapter.name)
                return
            if not pinned:
                self.refused.add(adapter.lora_id)
                log.warning(
                    "not pinning %s: %d pinned adapters leave no room for more in the engine's memory",
                    adapter.name,
                    len(self.pinned),
                )
                return
            self.pinned[adapter.lora_id] = adapter.name
            self.metrics.adapters_pinned.set(len(self.pinned))
            log.info("pinned adapter %s", adapter.name)
        await self.observe()

    async def pin_all(self, resolver: ModelResolver, catalog: Catalog) -> None:
        """At start-up: every persona whose card says pinned, on its live version."""
        personas, _ = await asyncio.to_thread(catalog.scan)
        for persona in personas:
            if not persona.card.serving.pinned or persona.live is None:
                continue
            try:
                target = await asyncio.to_thread(resolver.resolve, persona.name)
            except APIError as exc:
                log.warning("cannot pin persona %s: %s", persona.name, exc)
                continue
            await self.ensure(target)

    async def observe(self) -> None:
        """Compare what the engine holds now with the last observation and count the difference."""
        loaded = getattr(self.engine, "loaded_adapters", None)
        if loaded is None:
            return
        now = set(await loaded())
        before = self._seen if self._seen is not None else set()
        if new := len(now - before):
            self.metrics.adapter_loads.inc(new)
        if gone := len(before - now):
            self.metrics.adapter_evictions.inc(gone)
        self._seen = now
        self.metrics.adapters_loaded.set(len(now))
