"""A fleet of engine replicas on Ray Serve, routed by persona version (model multiplexing).

One ingress reads ``model`` from each OpenAI request and sends it, tagged as a multiplexed model id,
to the engine replicas: Ray routes a tag to a replica that already holds it, so each replica keeps
the adapters of its share of the personas instead of every replica loading every adapter. Each
replica is this project's own app and engine; training stays on the job queue and its workers.
Ray is imported only when a fleet is built or started, never at import.
"""

from .settings import FleetSettings

__all__ = ["FleetSettings"]
