"""OpenAI's Files and fine-tuning jobs API, backed by the persona store and the one job queue."""

from .files import FileStore
from .names import resolve_fine_tuned
from .routes import router

__all__ = ["FileStore", "resolve_fine_tuned", "router"]
