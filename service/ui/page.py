"""The chat page: a Gradio Blocks app over the server's own :class:`~service.chat.ChatService`.

Nothing here loads a model. Every reply goes through ``app.state.chat`` at request time, with the same
``ChatCompletionRequest`` an API client would send, so the page and ``/v1/chat/completions`` answer alike.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from fastapi import FastAPI

from store.errors import CardError, StoreError
from store.registry import PersonaStore

from ..errors import MODEL_LOADING
from ..personas.protocol import PersonaStatus
from ..personas.status import invalid_card_status, persona_status
from .actions import PersonaButtons, pin_label
from .board import StatusBoard
from .conversation import Conversation, Updates
from .events import conversation_outputs, side_outputs, wire_chat
from .fidelity import fidelity_markdown
from .layout import ChatComponents, build_layout
from .new_persona import NewPersonaPanel
from .picture import load_picture
from .review import ReviewPanel
from .session import (
    LIVE,
    Turn,
    card_markdown,
    description_markdown,
    new_session,
    persona_choices,
    problems_markdown,
    sampling_defaults,
    side_signature,
    to_chatbot,
    version_choices,
)

NOT_READY = MODEL_LOADING
EMPTY_STORE = (
    "No personas yet. Create one in the *New persona* tab, or drop chat logs into `personas/<name>/logs/`: "
    "the persona appears here."
)


class ChatPage(Conversation):
    """The page's components and handlers; :meth:`build` lays them out inside a ``gr.Blocks``."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.store: PersonaStore = app.state.store
        self.max_len: int = app.state.settings.max_model_len
        self.stopping: set[str] = set()  # sessions whose reply should end at its next piece
        self.board = StatusBoard(app)
        self.buttons = PersonaButtons(self.store, self._training)
        self.new_persona = NewPersonaPanel(app.state.uploads, self.store, self._training)
        self.review = ReviewPanel(app)
        self.ui: ChatComponents

    # ------------------------------------------------------------------ layout

    def build(self) -> gr.Blocks:
        blocks, self.ui = build_layout(self.buttons, self.new_persona, self.review, self.max_len, self._wire)
        return blocks

    def _wire(self, ui: ChatComponents, blocks: gr.Blocks) -> None:
        """Each panel gets the components it reads and the one way back into the chat tab it needs."""
        self.ui = ui
        side, conversation = side_outputs(ui, self.buttons.pin), conversation_outputs(ui)
        wire_chat(self, ui, blocks, side)
        self.buttons.wire(
            ui,
            side,
            conversation,
            shows=lambda name: self.side(name, fresh=True),
            shows_first=lambda chats: self.first(chats, fresh=True),
        )
        self.new_persona.wire(ui, side, conversation, opens=self.open)
        self.review.wire(ui.review_tab)

    def _training(self) -> Any:
        """The server's job queue now (None before start-up, and on a server without one)."""
        return getattr(self.app.state, "training", None)

    def _unchanged(self, component: Any = None) -> Updates:
        """An update that changes nothing (Gradio reads an empty dict as one value, not as no updates)."""
        return {component if component is not None else self.ui.chats: gr.skip()}

    # ------------------------------------------------------------------ side panel

    def _statuses(self, fresh: bool = False) -> tuple[list[PersonaStatus], dict[str, str]]:
        return self.board.snapshot(fresh)

    def _problems(self, problems: dict[str, str]) -> Any:
        text = problems_markdown(problems)
        return gr.Markdown(value=text, visible=True) if text else gr.Markdown(visible=False)

    def load(self, chats: dict[str, list[Turn]]) -> Updates:
        """First paint: the persona list, and the first persona picked."""
        return self.first(chats)

    def default_name(self) -> str | None:
        """The persona the first paint picks (the first in the list), or None when there is none."""
        statuses, _ = self._statuses()
        return _servable(statuses)

    def first(self, chats: dict[str, list[Turn]], fresh: bool = False) -> Updates:
        """The list with its first persona picked (or the empty store's hint)."""
        statuses, problems = self._statuses(fresh)
        choices = persona_choices(statuses)
        if not statuses:
            return {
                self.ui.persona: gr.Dropdown(choices=choices, value=None),
                self.ui.shown: None,
                self.ui.card: EMPTY_STORE,
                self.ui.description: "",
                self.ui.picture: gr.Image(value=None, visible=False),
                self.ui.problems: self._problems(problems),
                self.ui.chatbot: gr.Chatbot(value=[], placeholder="Pick a persona to start."),
            }
        name = _servable(statuses) or statuses[0].name
        updates = self.select(name, chats)
        updates[self.ui.persona] = gr.Dropdown(choices=choices, value=name)
        return updates

    def open(self, name: str, chats: dict[str, list[Turn]]) -> Updates:
        """The chat tab with ``name`` picked and on show (a persona just created in the other tab)."""
        updates = self.select(name, chats, fresh=True)
        choices = updates[self.ui.persona].constructor_args["choices"]
        return {
            **updates,
            self.ui.persona: gr.Dropdown(choices=choices, value=name),
            self.ui.tabs: gr.Tabs(selected="chat"),
        }

    def pick(self, name: str | None, shown: str | None, chats: dict[str, list[Turn]]) -> Updates:
        """The user picked from the list: show that persona, unless it is the one on show already."""
        if name == shown:
            return self._unchanged()
        return self.select(name, chats)

    def select(self, name: str | None, chats: dict[str, list[Turn]], fresh: bool = False) -> Updates:
        """Show a persona: card, picture, versions, its conversation (the greeting when new), its sampling."""
        if not name:
            return self._unchanged()
        try:
            persona = self.store.get(name)
        except CardError as exc:
            return self._invalid(invalid_card_status(name, exc), fresh)
        except StoreError as exc:
            message = f"The persona '{name}' cannot be shown: {exc}"
            gr.Warning(message)
            return {self.ui.error: gr.Markdown(value=f"⚠️ {message}", visible=True)}
        statuses, problems = self._statuses(fresh)
        status = next((s for s in statuses if s.name == name), None) or persona_status(persona)
        history = chats.get(name)
        if history is None:
            history = chats[name] = new_session(persona.card.greeting)
        temperature, top_p, max_tokens = sampling_defaults(persona.card.sampling, self.max_len)
        picture = load_picture(persona)
        questions = status.example_questions
        return {
            self.ui.shown: name,
            self.ui.persona: gr.Dropdown(choices=persona_choices(statuses)),
            self.ui.problems: self._problems(problems),
            self.ui.seen: side_signature(name, statuses, problems),
            self.ui.card: card_markdown(status),
            self.ui.description: description_markdown(status),
            self.ui.picture: gr.Image(value=picture, visible=picture is not None),
            self.ui.version: gr.Dropdown(choices=version_choices(status), value=LIVE),
            self.buttons.pin: gr.Button(value=pin_label(status)),
            self.ui.fidelity: fidelity_markdown(status, LIVE),
            self.ui.chatbot: gr.Chatbot(value=to_chatbot(history), placeholder=f"Say hello to {status.display_name}."),
            self.ui.chats: chats,
            self.ui.error: gr.Markdown(value="", visible=False),
            self.ui.examples: gr.Dataset(samples=[[q] for q in questions], visible=bool(questions)),
            self.ui.temperature: temperature,
            self.ui.top_p: top_p,
            self.ui.max_tokens: max_tokens,
        }

    def _invalid(self, status: PersonaStatus, fresh: bool) -> Updates:
        """A persona whose card does not validate: on show with the error naming the file and field,
        and nothing to chat with until the card is fixed."""
        statuses, problems = self._statuses(fresh)
        gr.Warning(f"{status.name} is not served: {status.error}")
        return {
            self.ui.shown: status.name,
            self.ui.persona: gr.Dropdown(choices=persona_choices(statuses)),
            self.ui.problems: self._problems(problems),
            self.ui.seen: side_signature(status.name, statuses, problems),
            self.ui.card: card_markdown(status),
            self.ui.description: description_markdown(status),
            self.ui.picture: gr.Image(value=None, visible=False),
            self.ui.version: gr.Dropdown(choices=version_choices(status), value=LIVE),
            self.ui.fidelity: "",
            self.ui.chatbot: gr.Chatbot(value=[], placeholder=f"{status.name} answers once its card is fixed."),
            self.ui.error: gr.Markdown(visible=False),
            self.ui.examples: gr.Dataset(samples=[], visible=False),
        }

    def refresh(self, name: str | None, seen: str, version: str | None = LIVE) -> Updates:
        """Timer tick: new, changed or removed personas show up without a reload; the selection stays.
        Cheap when nothing changed: the store is read again only when the watcher or a job saw a change."""
        statuses, problems = self._statuses()
        if side_signature(name, statuses, problems) == seen:
            return self._unchanged(self.ui.seen)
        return self.side(name, version=version)

    def side(self, name: str | None, fresh: bool = False, version: str | None = LIVE) -> Updates:
        """The side panel for ``name`` as the store has it now; the selection stays."""
        statuses, problems = self._statuses(fresh)
        choices = persona_choices(statuses)
        current = next((s for s in statuses if s.name == name), None)
        signature = side_signature(name, statuses, problems)
        updates: Updates = {
            self.ui.persona: gr.Dropdown(choices=choices),
            self.ui.problems: self._problems(problems),
            self.ui.seen: signature,
        }
        if current is not None:
            updates[self.ui.card] = card_markdown(current)
            updates[self.ui.description] = description_markdown(current)
            updates[self.ui.version] = gr.Dropdown(choices=version_choices(current))
            updates[self.buttons.pin] = gr.Button(value=pin_label(current))
            updates[self.ui.fidelity] = fidelity_markdown(current, version)
        elif name:
            updates[self.ui.card] = f"### {name}\n*no longer in the personas folder*"
            updates[self.ui.description] = ""
        elif statuses:
            updates[self.ui.card] = "Pick a persona."
        else:
            updates[self.ui.card] = EMPTY_STORE
        return updates

    def show_fidelity(self, name: str | None, version: str | None) -> str:
        """The picked version's fidelity figures, beside the version picker."""
        statuses, _ = self._statuses()
        return fidelity_markdown(next((s for s in statuses if s.name == name), None), version)

    # ------------------------------------------------------------------ chatting

    def _controls(self, busy: bool) -> Updates:
        return {
            self.ui.send_btn: gr.Button(visible=not busy),
            self.ui.stop_btn: gr.Button(visible=busy, interactive=True),
            self.ui.retry_btn: gr.Button(interactive=not busy),
            self.ui.undo_btn: gr.Button(interactive=not busy),
            self.ui.new_btn: gr.Button(interactive=not busy),
            self.ui.persona: gr.Dropdown(interactive=not busy),
            self.ui.version: gr.Dropdown(interactive=not busy),
        }

    def _failed(self, message: str) -> Updates:
        gr.Warning(message)
        return {self.ui.error: gr.Markdown(value=f"⚠️ {message}", visible=True), **self._controls(False)}


def _servable(statuses: list[PersonaStatus]) -> str | None:
    """The first persona of the list that can be served (one with an invalid card is not picked first)."""
    return next((s.name for s in statuses if s.error is None), None)
