"""Building the fleet as a Ray Serve application, for ``persona serve --ray`` and ``serve run``.

``serve run service.fleet.app:fleet replicas=2 personas_dir=/srv/personas`` deploys it from Ray's own
command line: the arguments are the fields of :class:`ServeSettings` and :class:`FleetSettings`, and
``PERSONA_*`` variables fill the rest, as for ``persona serve``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..app import EngineFactory, vllm_engine
from ..settings import ServeSettings
from .ingress import FleetIngress
from .replica import EngineReplica
from .settings import FleetSettings

APP_NAME = "persona"


def replica_settings(settings: ServeSettings) -> ServeSettings:
    """A replica only serves: no training worker, no watcher queueing jobs (N replicas would queue each
    change N times; `persona worker` processes take the jobs from the shared queue), no chat page (its
    sessions live in one process). Paths are made absolute, since Ray's workers run elsewhere."""
    base = Path(settings.base_model).expanduser()
    return settings.model_copy(
        update={
            "train": False,
            "auto_train": False,
            "ui": False,
            "personas_dir": settings.personas_dir.expanduser().resolve(),
            "cache_dir": settings.cache_dir.expanduser().resolve(),
            "base_model": str(base.resolve()) if base.exists() else settings.base_model,
        }
    )


def build_fleet(settings: ServeSettings, fleet: FleetSettings, engine_factory: EngineFactory = vllm_engine) -> Any:
    """The ingress bound to the engine replicas: a Ray Serve application, not yet running."""
    from ray import serve

    served = replica_settings(settings)
    scaling: dict[str, Any] = (
        {"autoscaling_config": {"min_replicas": fleet.replicas, "max_replicas": fleet.max_replicas}}
        if fleet.max_replicas and fleet.max_replicas > fleet.replicas
        else {"num_replicas": fleet.replicas}
    )
    engine = serve.deployment(
        EngineReplica,
        name="engine",
        ray_actor_options={"num_cpus": fleet.replica_cpus, "num_gpus": fleet.replica_gpus},
        max_ongoing_requests=served.max_num_seqs,
        **scaling,
    )
    ingress = serve.deployment(
        FleetIngress, name="ingress", ray_actor_options={"num_cpus": fleet.ingress_cpus}, max_ongoing_requests=1000
    )
    held = fleet.max_personas_per_replica or served.max_cpu_loras
    return ingress.bind(engine.bind(served, engine_factory, held), served.personas_dir, fleet.retries)


def fleet(args: dict[str, str]) -> Any:
    """The ``serve run`` target."""
    serve_fields = {k: v for k, v in args.items() if k in ServeSettings.model_fields}
    fleet_fields = {k: v for k, v in args.items() if k in FleetSettings.model_fields}
    unknown = set(args) - set(serve_fields) - set(fleet_fields)
    if unknown:
        raise ValueError(f"unknown arguments: {', '.join(sorted(unknown))}")
    return build_fleet(ServeSettings(**serve_fields), FleetSettings(**fleet_fields))


def start_fleet(
    settings: ServeSettings, fleet: FleetSettings, engine_factory: EngineFactory = vllm_engine, **ray_init: Any
) -> None:
    """Join (or start) the Ray cluster, serve HTTP on the settings' host and port, deploy, and return
    once every replica is up."""
    import os

    import ray
    from ray import serve

    if not ray.is_initialized():
        repo = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
        ray.init(address=fleet.ray_address, runtime_env={"env_vars": {"PYTHONPATH": path}}, **ray_init)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_fleet(settings, fleet, engine_factory), name=APP_NAME, route_prefix="/")
