"""The FastAPI application: API, status, metrics and the chat page, over one engine."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from store.base_model import BaseModel, resolve_base_model
from store.catalog import Catalog
from store.registry import PersonaStore
from store.serving_load import ServingLoad, busy_file

from . import completions, fine_tuning, synthetic_routes
from .background import BackgroundTraining
from .chat import ChatService
from .engine import Engine, VllmEngine
from .errors import install_handlers
from .fine_tuning import FileStore
from .metrics import Metrics
from .openapi import install_openapi
from .personas import routes as personas
from .personas.status import StatusCache, prebuild_statuses
from .pinning import AdapterPins
from .resolver import ModelResolver
from .routes import api, ops
from .settings import ServeSettings
from .store_changes import MAX_AGE_S, StoreChanges
from .uploads import Uploads

log = logging.getLogger("persona.service")

EngineFactory = Callable[[ServeSettings, BaseModel], Engine]


def vllm_engine(settings: ServeSettings, base: BaseModel) -> Engine:
    return VllmEngine(settings, base.path, base.id)


def freeze_start_up_heap() -> None:
    """Hide what start-up made (torch, the engine's client, the tokenizer, the page) from the garbage
    collector, as vLLM's engine core does with its own: a full collection otherwise walks all of it
    again, and the server answers nothing meanwhile (listings, streams)."""
    gc.collect()
    gc.freeze()


def create_app(settings: ServeSettings, engine_factory: EngineFactory = vllm_engine) -> FastAPI:
    """Build the app; the base model and engine load in its start-up, never at import."""
    metrics = Metrics()
    store = PersonaStore(settings.personas_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from transformers import AutoTokenizer

        base = resolve_base_model(settings.base_model, settings.cache_dir, settings.allow_download)
        tokenizer = AutoTokenizer.from_pretrained(base.path)
        engine = engine_factory(settings, base)
        await engine.start()
        resolver = ModelResolver(store, base, settings.max_lora_rank)
        app.state.resolver = resolver
        load = ServingLoad(busy_file(settings.cache_dir)) if settings.train else None
        pins = AdapterPins(engine, metrics)
        app.state.pins = pins
        app.state.chat = ChatService(engine, resolver, tokenizer, metrics, settings.strict_parameters, load, pins)
        await pins.pin_all(resolver, app.state.catalog)
        training = BackgroundTraining(settings, store, load)
        await training.start()
        app.state.training = training
        app.state.changes.watcher = training.watcher
        ready = asyncio.create_task(asyncio.to_thread(prebuild_statuses, store, app.state.statuses))
        log.info("serving %s with personas from %s", base.id, settings.personas_dir)
        freeze_start_up_heap()
        try:
            yield
        finally:
            gc.unfreeze()
            await asyncio.gather(ready, return_exceptions=True)
            app.state.chat = None
            app.state.pins = None
            app.state.training = None
            app.state.changes.watcher = None
            await training.stop()
            await engine.stop()
            if load:
                load.close()

    app = FastAPI(title="Persona service", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.store = store
    app.state.changes = StoreChanges(settings.personas_dir)
    app.state.catalog = Catalog(store, app.state.changes.token, MAX_AGE_S)
    app.state.statuses = StatusCache(app.state.catalog)
    app.state.chat = None
    app.state.pins = None
    app.state.training = None
    app.state.files = FileStore(settings.personas_dir, settings.max_upload_mb << 20)
    app.state.uploads = Uploads(settings.personas_dir, settings.max_upload_mb << 20)
    install_handlers(app, metrics)
    install_openapi(app)
    app.include_router(api)
    app.include_router(completions.router)
    app.include_router(personas.router)
    app.include_router(synthetic_routes.router)
    app.include_router(fine_tuning.router)
    app.include_router(ops)
    if settings.ui:
        from .ui import mount_ui

        mount_ui(app)

        @app.get("/", include_in_schema=False)
        async def root() -> RedirectResponse:
            return RedirectResponse("/ui")

    return app
