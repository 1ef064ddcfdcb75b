"""The persona's picture for the page, loaded as an image so the personas folder itself is never served."""

from __future__ import annotations

from typing import Any

from store.registry import Persona


def load_picture(persona: Persona) -> Any:
    """The persona's picture as an image Gradio can serve (the personas folder itself is never exposed)."""
    path = persona.picture
    if path is None or not path.is_file():
        return None
    try:
        from PIL import Image

        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError):
        return None
