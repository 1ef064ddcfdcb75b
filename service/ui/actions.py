"""The page's buttons for the persona on show: Train, Roll back, Pin/Unpin, Remove (asked twice).

They call :mod:`service.personas.actions`, as the API routes do, so a refusal reads the same in both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from store.registry import PersonaStore

from ..personas import actions
from ..personas.protocol import PersonaStatus
from .layout import ChatComponents
from .session import error_text

Updates = dict[Any, Any]
Shows = Callable[[str], Updates]
"""The side panel for a persona, read afresh after a change to it."""
ShowsFirst = Callable[[dict[str, Any]], Updates]
"""The page with the first persona of the list on show (after the one on show was removed)."""


def pin_label(status: PersonaStatus | None) -> str:
    return "Unpin" if status is not None and status.pinned else "Pin"


class PersonaButtons:
    """Components and handlers; :meth:`build` lays them out in the side panel, :meth:`wire` connects them."""

    error: gr.Markdown
    shows: Shows
    shows_first: ShowsFirst

    def __init__(self, store: PersonaStore, training: Callable[[], Any]) -> None:
        self.store = store
        self.training = training
        """The server's job queue now (None before start-up and on a server without one)."""

    def build(self) -> None:
        with gr.Row(elem_id="persona-actions"):
            self.train = gr.Button("Train", size="sm", min_width=60, elem_id="persona-train")
            self.rollback = gr.Button("Roll back", size="sm", min_width=60, elem_id="persona-rollback")
            self.pin = gr.Button(pin_label(None), size="sm", min_width=60, elem_id="persona-pin")
            self.remove = gr.Button("Remove", size="sm", variant="stop", min_width=60, elem_id="persona-remove")
        with gr.Group(visible=False, elem_id="remove-confirm") as self.confirm:
            self.question = gr.Markdown(elem_id="remove-question")
            with gr.Row():
                self.remove_yes = gr.Button("Remove it", size="sm", variant="stop", elem_id="remove-yes")
                self.remove_no = gr.Button("Keep it", size="sm", elem_id="remove-no")

    def wire(
        self, ui: ChatComponents, side: list[Any], conversation: list[Any], shows: Shows, shows_first: ShowsFirst
    ) -> None:
        """Connect the buttons: they read the persona picked in ``ui``, say what went wrong in its error
        line, and show the persona again with ``shows`` (or the first one left with ``shows_first``)."""
        self.error, self.shows, self.shows_first = ui.error, shows, shows_first
        quiet: dict[str, Any] = {"show_progress": "hidden", "api_visibility": "private"}
        after = [*side, ui.error]
        self.train.click(self.queue, [ui.persona], after, **quiet)
        self.rollback.click(self.roll_back, [ui.persona], after, **quiet)
        self.pin.click(self.toggle_pin, [ui.persona], after, **quiet)
        self.remove.click(self.ask, [ui.persona], [self.confirm, self.question], **quiet)
        self.remove_no.click(lambda: gr.Group(visible=False), None, [self.confirm], **quiet)
        self.remove_yes.click(self.removed, [ui.persona, ui.chats], [self.confirm, *side, *conversation], **quiet)

    def _done(self, name: str, message: str) -> Updates:
        gr.Info(message)
        return {**self.shows(name), self.error: gr.Markdown(value="", visible=False)}

    def _failed(self, exc: Exception) -> Updates:
        message = error_text(exc)
        gr.Warning(message)
        return {self.error: gr.Markdown(value=f"⚠️ {message}", visible=True)}

    def queue(self, name: str | None) -> Updates:
        """Train: queue a run of the persona's logs (the live version keeps answering meanwhile)."""
        try:
            persona = actions.get_persona(self.store, name or "")
            actions.queue_training(self.training(), persona, "page")
        except Exception as exc:
            return self._failed(exc)
        return self._done(persona.name, f"{persona.title} is queued for training.")

    def roll_back(self, name: str | None) -> Updates:
        try:
            status = actions.roll_back(self.store, name or "")
        except Exception as exc:
            return self._failed(exc)
        return self._done(status.name, f"{status.display_name}: {status.live_version} is live again.")

    def toggle_pin(self, name: str | None) -> Updates:
        try:
            status = actions.status_of(self.store, name or "")
            status = actions.pin(self.store, status.name, not status.pinned)
        except Exception as exc:
            return self._failed(exc)
        said = f"pinned to {status.live_version}" if status.pinned else "unpinned: retraining may replace its version"
        return self._done(status.name, f"{status.display_name} is {said}.")

    def ask(self, name: str | None) -> Updates:
        if not name:
            return {self.confirm: gr.Group(visible=False)}
        return {
            self.confirm: gr.Group(visible=True),
            self.question: f"Remove **{name}** from service? Its folder moves to `.removed/` in the personas folder.",
        }

    def removed(self, name: str | None, chats: dict[str, Any]) -> Updates:
        """Remove confirmed: the persona leaves the list, and the first one left is shown."""
        try:
            actions.remove(self.store, self.training(), name or "")
        except Exception as exc:
            return {self.confirm: gr.Group(visible=False), **self._failed(exc)}
        chats.pop(name, None)
        gr.Info(f"{name} was removed from service.")
        return {self.confirm: gr.Group(visible=False), **self.shows_first(chats)}
