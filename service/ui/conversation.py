"""The chat tab's conversation handlers: send, retry, stop, undo and a new session.

Every reply goes through the server's :class:`~service.chat.ChatService` with the request an API client
would send. :class:`Conversation` is mixed into the page, which provides the components (``ui``), the
app and store, the persona shown first, and the control and failure updates it names below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import gradio as gr
from fastapi import FastAPI

from store.errors import StoreError
from store.registry import PersonaStore

from ..chat import ChatService
from ..errors import MODEL_LOADING, require
from .layout import ChatComponents
from .session import (
    Turn,
    assistant_turn,
    build_request,
    caption,
    error_text,
    for_retry,
    new_session,
    to_chatbot,
    undo,
    user_turn,
)

Updates = dict[Any, Any]


def chat_service(app: FastAPI) -> ChatService:
    """The server's chat service, or the API's 503 while the engine is still starting."""
    return require(getattr(app.state, "chat", None), MODEL_LOADING)


class Conversation:
    """Handlers of one browser session's conversation with the picked persona."""

    app: FastAPI
    store: PersonaStore
    ui: ChatComponents
    stopping: set[str]
    """Sessions whose reply should end at its next piece."""

    def default_name(self) -> str | None:
        raise NotImplementedError

    def _unchanged(self, component: Any = None) -> Updates:
        raise NotImplementedError

    def _controls(self, busy: bool) -> Updates:
        raise NotImplementedError

    def _failed(self, message: str) -> Updates:
        raise NotImplementedError

    def _greeting(self, name: str) -> str | None:
        try:
            return self.store.get(name).card.greeting
        except StoreError:
            return None

    async def send(
        self,
        text: str,
        name: str | None,
        version: str | None,
        temperature: float,
        top_p: float,
        max_tokens: float,
        chats: dict[str, list[Turn]],
        request: gr.Request | None = None,
    ) -> AsyncIterator[Updates]:
        text = (text or "").strip()
        if not text:
            yield self._unchanged()
            return
        picked = name or self.default_name()  # sent before the first paint had set the list
        if not picked:
            yield self._failed("No persona to talk to yet: create one in the New persona tab.")
            return
        name = picked
        self.stopping.discard(_session(request))
        before = list(chats.get(name) or new_session(self._greeting(name)))
        history = before + [user_turn(text)]
        chats[name] = history
        yield {
            self.ui.message: "",
            self.ui.chatbot: to_chatbot(history),
            self.ui.chats: chats,
            self.ui.error: gr.Markdown(visible=False),
            **self._controls(True),
            self.ui.persona: gr.Dropdown(value=name, interactive=False),
        }
        async for update in self._reply(
            name, version, temperature, top_p, max_tokens, chats, history, before, text, request
        ):
            yield update

    async def retry(
        self,
        name: str | None,
        version: str | None,
        temperature: float,
        top_p: float,
        max_tokens: float,
        chats: dict[str, list[Turn]],
        request: gr.Request | None = None,
    ) -> AsyncIterator[Updates]:
        before = list(chats.get(name) or []) if name else []
        history = for_retry(before)
        if not name or history is None:
            gr.Info("Nothing to retry yet: send a message first.")
            yield self._unchanged()
            return
        chats[name] = history
        self.stopping.discard(_session(request))
        yield {
            self.ui.chatbot: to_chatbot(history),
            self.ui.chats: chats,
            self.ui.error: gr.Markdown(visible=False),
            **self._controls(True),
        }
        async for update in self._reply(
            name, version, temperature, top_p, max_tokens, chats, history, before, None, request
        ):
            yield update

    async def _reply(
        self,
        name: str,
        version: str | None,
        temperature: float,
        top_p: float,
        max_tokens: float,
        chats: dict[str, list[Turn]],
        history: list[Turn],
        before: list[Turn],
        text: str | None,
        request: gr.Request | None,
    ) -> AsyncIterator[Updates]:
        """Stream one reply into ``history``; on an error, put the conversation (and the typed text) back."""
        session = _session(request)
        try:
            chat = chat_service(self.app)
            prepared = chat.prepare(build_request(name, version, history, temperature, top_p, max_tokens))
        except Exception as exc:  # the API's 400/404/409/503, or a value it would refuse
            chats[name] = before
            updates = {self.ui.chatbot: to_chatbot(before), self.ui.chats: chats, **self._failed(error_text(exc))}
            if text is not None:
                updates[self.ui.message] = text
            yield updates
            return
        reply = assistant_turn("", caption(name, prepared.target.version_label))
        history.append(reply)
        yield {self.ui.chatbot: to_chatbot(history), self.ui.chats: chats}
        try:
            # Closing the stream early (Stop) aborts the engine request at once.
            async with aclosing(chat.stream(prepared)) as chunks:
                async for chunk in chunks:
                    if session in self.stopping:
                        break
                    if chunk.index == 0 and chunk.text:
                        reply["content"] += chunk.text
                        yield {self.ui.chatbot: to_chatbot(history), self.ui.chats: chats}
        except Exception as exc:  # the engine failed mid-reply: keep what came, say so
            yield {self.ui.chatbot: to_chatbot(history), self.ui.chats: chats, **self._failed(error_text(exc))}
            return
        finally:
            self.stopping.discard(session)
        yield {self.ui.chatbot: to_chatbot(history), self.ui.chats: chats, **self._controls(False)}

    def stop(self, request: gr.Request | None = None) -> Updates:
        """Stop: the reply of this session ends at its next piece, keeping what came."""
        self.stopping.add(_session(request))
        return {self.ui.stop_btn: gr.Button(interactive=False)}

    def undo(self, name: str | None, chats: dict[str, list[Turn]]) -> Updates:
        if not name:
            return self._unchanged()
        history, text = undo(chats.get(name) or [])
        chats[name] = history
        return {
            self.ui.message: text,
            self.ui.chatbot: to_chatbot(history),
            self.ui.chats: chats,
            self.ui.error: gr.Markdown(visible=False),
        }

    def new_session(self, name: str | None, chats: dict[str, list[Turn]]) -> Updates:
        if not name:
            return self._unchanged()
        history = chats[name] = new_session(self._greeting(name))
        return {self.ui.chatbot: to_chatbot(history), self.ui.chats: chats, self.ui.error: gr.Markdown(visible=False)}


def _session(request: gr.Request | None) -> str:
    """Which browser session an event comes from (one reply at a time runs in each)."""
    return getattr(request, "session_hash", None) or ""
