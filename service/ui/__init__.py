"""The browser chat page, mounted at ``/ui`` in the API's own app (same engine, same personas)."""

from __future__ import annotations

from fastapi import FastAPI

PATH = "/ui"


def mount_ui(app: FastAPI) -> None:
    """Build the Gradio page and mount it at ``/ui``; models are only reached at request time."""
    import gradio as gr

    from .page import ChatPage
    from .style import CSS, HEAD, theme

    settings = app.state.settings
    blocks = ChatPage(app).build()
    keys = set(settings.api_keys)
    gr.mount_gradio_app(
        app,
        blocks,
        path=PATH,
        css=CSS,
        head=HEAD,
        theme=theme(),
        ssr_mode=False,
        run_history=False,
        footer_links=["gradio", "settings"],
        show_error=False,
        # With API keys set, the page asks for one too (any user name; the key as the password).
        auth=(lambda _user, key: key in keys) if keys else None,
        auth_message="Sign in with an API key of this server as the password." if keys else None,
    )
