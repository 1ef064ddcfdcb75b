"""The server's client moved to :mod:`training.server_client`; these names stay importable from here."""

from ..server_client import Ask, Reply, Sampling, ServerError, System, generate

__all__ = ["Ask", "Reply", "Sampling", "ServerError", "System", "generate"]
