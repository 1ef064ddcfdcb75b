"""Prometheus metrics, in a registry of their own made per app (nothing global at import)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "persona_chat_requests", "Chat completions served", ["kind", "status"], registry=self.registry
        )
        self.prompt_tokens = Counter(
            "persona_prompt_tokens", "Prompt tokens processed", ["kind"], registry=self.registry
        )
        self.completion_tokens = Counter(
            "persona_completion_tokens", "Completion tokens generated", ["kind"], registry=self.registry
        )
        self.request_seconds = Histogram(
            "persona_request_seconds",
            "Time from start to the last token",
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80),
        )
        self.time_to_first_token = Histogram(
            "persona_time_to_first_token_seconds",
            "Time to the first token",
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
        )
        self.errors = Counter(
            "persona_http_errors", "Requests answered with an error", ["status"], registry=self.registry
        )
        self.adapter_loads = Counter(
            "persona_adapter_loads", "Adapters seen newly loaded in the engine", registry=self.registry
        )
        self.adapter_evictions = Counter(
            "persona_adapter_evictions", "Adapters seen gone from the engine", registry=self.registry
        )
        self.adapters_loaded = Gauge("persona_adapters_loaded", "Adapters held by the engine", registry=self.registry)
        self.adapters_pinned = Gauge("persona_adapters_pinned", "Adapters pinned in the engine", registry=self.registry)
        self.personas = Gauge("persona_personas", "Personas found in the store", ["status"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
