"""The page's buttons for the persona on show: Train, Roll back, Pin/Unpin, Remove (asked twice).

They call :mod:`service.persona_actions`, as the API routes do, so a refusal reads the same in both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from .. import persona_actions as actions
from ..persona_status import PersonaStatus
from .session import error_text

if TYPE_CHECKING:
    from .page import ChatPage

Updates = dict[Any, Any]


def pin_label(status: PersonaStatus | None) -> str:
    return "Unpin" if status is not None and status.pinned else "Pin"


class PersonaButtons:
    """Components and handlers; :meth:`build` lays them out in the side panel."""

    def __init__(self, page: ChatPage) -> None:
        self.page = page

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

    def wire(self, side: list[Any], conversation: list[Any]) -> None:
        page = self.page
        quiet: dict[str, Any] = {"show_progress": "hidden", "api_visibility": "private"}
        after = [*side, page.error]
        self.train.click(self.queue, [page.persona], after, **quiet)
        self.rollback.click(self.roll_back, [page.persona], after, **quiet)
        self.pin.click(self.toggle_pin, [page.persona], after, **quiet)
        self.remove.click(self.ask, [page.persona], [self.confirm, self.question], **quiet)
        self.remove_no.click(lambda: gr.Group(visible=False), None, [self.confirm], **quiet)
        self.remove_yes.click(self.removed, [page.persona, page.chats], [self.confirm, *side, *conversation], **quiet)

    def _done(self, name: str, message: str) -> Updates:
        gr.Info(message)
        return {**self.page.side(name, fresh=True), self.page.error: gr.Markdown(value="", visible=False)}

    def _failed(self, exc: Exception) -> Updates:
        message = error_text(exc)
        gr.Warning(message)
        return {self.page.error: gr.Markdown(value=f"⚠️ {message}", visible=True)}

    def queue(self, name: str | None) -> Updates:
        """Train: queue a run of the persona's logs (the live version keeps answering meanwhile)."""
        try:
            persona = actions.get_persona(self.page.store, name or "")
            actions.queue_training(getattr(self.page.app.state, "training", None), persona, "page")
        except Exception as exc:
            return self._failed(exc)
        return self._done(persona.name, f"{persona.title} is queued for training.")

    def roll_back(self, name: str | None) -> Updates:
        try:
            status = actions.roll_back(self.page.store, name or "")
        except Exception as exc:
            return self._failed(exc)
        return self._done(status.name, f"{status.display_name}: {status.live_version} is live again.")

    def toggle_pin(self, name: str | None) -> Updates:
        try:
            status = actions.status_of(self.page.store, name or "")
            status = actions.pin(self.page.store, status.name, not status.pinned)
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
        page = self.page
        try:
            actions.remove(page.store, getattr(page.app.state, "training", None), name or "")
        except Exception as exc:
            return {self.confirm: gr.Group(visible=False), **self._failed(exc)}
        chats.pop(name, None)
        gr.Info(f"{name} was removed from service.")
        return {self.confirm: gr.Group(visible=False), **page.first(chats, fresh=True)}
