"""Which handler each of the chat tab's events calls, and what it reads and updates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import gradio as gr

from .layout import ChatComponents


class ChatHandlers(Protocol):
    """The chat tab's handlers (:class:`~service.ui.page.ChatPage`)."""

    load: Callable[..., Any]
    pick: Callable[..., Any]
    refresh: Callable[..., Any]
    show_fidelity: Callable[..., Any]
    send: Callable[..., Any]
    retry: Callable[..., Any]
    stop: Callable[..., Any]
    undo: Callable[..., Any]
    new_session: Callable[..., Any]


PRIVATE: dict[str, Any] = {"api_visibility": "private"}
QUIET: dict[str, Any] = {"show_progress": "hidden", **PRIVATE}


def side_outputs(ui: ChatComponents, pin: gr.Button) -> list[Any]:
    """What showing a persona in the side panel updates (``pin`` is the persona buttons' Pin)."""
    return [
        ui.persona,
        ui.version,
        ui.card,
        ui.description,
        ui.picture,
        ui.problems,
        ui.seen,
        ui.shown,
        pin,
        ui.fidelity,
    ]


def conversation_outputs(ui: ChatComponents) -> list[Any]:
    """What showing a persona's conversation updates (its sampling sliders too)."""
    return [ui.chatbot, ui.chats, ui.error, ui.examples, ui.temperature, ui.top_p, ui.max_tokens]


def wire_chat(page: ChatHandlers, ui: ChatComponents, blocks: gr.Blocks, side: list[Any]) -> None:
    """Connect the chat tab's own events (the panels connect theirs)."""
    sampling = [ui.temperature, ui.top_p, ui.max_tokens]
    conversation = conversation_outputs(ui)
    controls = [ui.send_btn, ui.stop_btn, ui.retry_btn, ui.undo_btn, ui.new_btn, ui.persona, ui.version]
    reply = [ui.message, ui.chatbot, ui.chats, ui.error, *controls]
    replying: dict[str, Any] = dict(concurrency_limit=None, show_progress="hidden", **PRIVATE)

    blocks.load(page.load, [ui.chats], side + conversation, **PRIVATE)
    ui.persona.select(page.pick, [ui.persona, ui.shown, ui.chats], side + conversation, **QUIET)
    ui.timer.tick(page.refresh, [ui.persona, ui.seen, ui.version], side, concurrency_limit=None, **QUIET)
    ui.version.change(page.show_fidelity, [ui.persona, ui.version], [ui.fidelity], **QUIET)
    gr.on(
        [ui.send_btn.click, ui.message.submit],
        page.send,
        [ui.message, ui.persona, ui.version, *sampling, ui.chats],
        reply,
        **replying,
    )
    ui.retry_btn.click(page.retry, [ui.persona, ui.version, *sampling, ui.chats], reply, **replying)
    # Stop ends the reply from inside (the engine request is aborted and the page keeps what came);
    # cancelling the event from outside would leave the chat in Gradio's error state.
    ui.stop_btn.click(page.stop, None, [ui.stop_btn], queue=False, **PRIVATE)
    ui.undo_btn.click(page.undo, [ui.persona, ui.chats], [ui.message, ui.chatbot, ui.chats, ui.error], **QUIET)
    ui.chatbot.clear(page.new_session, [ui.persona, ui.chats], [ui.chatbot, ui.chats, ui.error], **QUIET)
    ui.new_btn.click(page.new_session, [ui.persona, ui.chats], [ui.chatbot, ui.chats, ui.error], **QUIET)
    ui.examples.click(lambda sample: sample[0] if sample else "", [ui.examples], [ui.message], **QUIET)
