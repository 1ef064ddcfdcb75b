"""How a fleet is laid out on Ray: replicas, their share of a machine, and where the cluster is."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FleetSettings(BaseSettings):
    """Read with ``persona serve --ray`` (flags or ``PERSONA_*`` variables) or a ``serve run`` target."""

    model_config = SettingsConfigDict(env_prefix="PERSONA_", extra="ignore")

    ray_address: str | None = Field(
        default=None, description="Ray cluster to join (with --ray); none = start a local one on this machine."
    )
    replicas: int = Field(default=1, ge=1, description="Engine replicas of the fleet (with --ray).")
    max_replicas: int | None = Field(
        default=None, ge=1, description="With --ray: let Ray scale the replicas between --replicas and this by load."
    )
    replica_cpus: float = Field(default=1.0, ge=0, description="CPU cores Ray reserves per replica (with --ray).")
    replica_gpus: float = Field(
        default=0.0,
        ge=0,
        description="GPUs per engine replica (with --ray): 1 for one replica per GPU, the tensor parallel size "
        "for a base spread over several.",
    )
    max_personas_per_replica: int | None = Field(
        default=None,
        ge=1,
        description="Persona versions one replica is routed as holding (with --ray); none = as many as its engine "
        "keeps loaded (--max-cpu-loras).",
    )
    ingress_cpus: float = Field(default=0.1, ge=0, description="CPU cores Ray reserves for the ingress (with --ray).")
    retries: int = Field(
        default=1,
        ge=0,
        description="With --ray: times a request is sent to another replica when its replica dies before answering.",
    )
