"""One engine replica: the project's own app (routes, chat logic, engine and its plugin) inside a Ray actor."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from ..app import EngineFactory, create_app
from ..lora_memory import cpu_lora_capacity
from ..settings import ServeSettings
from .asgi import call_app
from .protocol import ForwardedRequest, ResponseHead

log = logging.getLogger("persona.fleet")


@dataclass
class HeldPersona:
    """A persona version Ray counts as on this replica.

    It is bookkeeping for routing: the engine loads the adapter itself on the version's first request
    and keeps it in its own LRU cache (``max_cpu_loras``), whose size this count follows."""

    model: str
    since: float = field(default_factory=time.time)


class EngineReplica:
    """A Ray Serve deployment class (wrapped by :func:`service.fleet.app.build_fleet`)."""

    async def __init__(self, settings: ServeSettings, engine_factory: EngineFactory, max_personas: int) -> None:
        from ray import serve

        self.app = create_app(settings, engine_factory)
        lifespan: AbstractAsyncContextManager = self.app.router.lifespan_context(self.app)
        await lifespan.__aenter__()  # the base model and the engine start here, as in `persona serve`
        self._lifespan: AbstractAsyncContextManager | None = lifespan
        self.replica = serve.get_replica_context().replica_id.to_full_id_str()

        async def hold(model: str) -> HeldPersona:
            return HeldPersona(model)

        # Wired at start-up because the number held comes from the settings.
        engine = self.app.state.chat.engine  # the number it chose at start, else sized the same way
        held = (
            max_personas
            or getattr(engine, "cpu_loras", None)
            or cpu_lora_capacity(settings, self.app.state.resolver.base.path)
        )
        self.hold_persona = serve.multiplexed(max_num_models_per_replica=held)(hold)
        log.info("replica %s ready", self.replica)

    async def forward(self, request: ForwardedRequest) -> AsyncIterator[ResponseHead | bytes]:
        """Answer one HTTP request with the app: the head first, then the body as it is produced."""
        from ray import serve

        model = serve.get_multiplexed_model_id()
        if model:
            await self.hold_persona(model)
        async for item in call_app(self.app, request):
            if isinstance(item, tuple):
                status, headers = item
                yield ResponseHead(status=status, headers=headers, replica=self.replica)
            else:
                yield item

    def check_health(self) -> None:
        """Ray restarts a replica whose app lost its engine."""
        if getattr(self.app.state, "chat", None) is None:
            raise RuntimeError("the engine is not running")

    async def __del__(self) -> None:
        """Ray calls this when it stops the replica: the engine stops as at a server's shutdown."""
        lifespan = getattr(self, "_lifespan", None)
        if lifespan is not None:
            self._lifespan = None
            await lifespan.__aexit__(None, None, None)
