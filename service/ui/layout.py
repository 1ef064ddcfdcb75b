"""The chat page's layout: every component, with the ids the browser tests find them by.

:func:`build_layout` returns the components as one typed object, :class:`ChatComponents`; the panels
(buttons, new persona, review) lay out and keep their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import gradio as gr

from .session import LIVE

REFRESH_SECONDS = 4.0


class Panel(Protocol):
    """A part of the page that lays out its own components where :func:`build_layout` puts it."""

    def build(self) -> None: ...


@dataclass(frozen=True)
class ChatComponents:
    """The components the chat tab's handlers read and update."""

    chats: gr.State
    """Persona name -> its conversation (list of turns)."""
    seen: gr.State
    """What the side panel shows, to skip refreshes that change nothing."""
    shown: gr.State
    """The persona on show (picking it again changes nothing)."""
    tabs: gr.Tabs
    review_tab: gr.Tab
    timer: gr.Timer
    persona: gr.Dropdown
    picture: gr.Image
    card: gr.Markdown
    description: gr.Markdown
    problems: gr.Markdown
    version: gr.Dropdown
    fidelity: gr.Markdown
    temperature: gr.Slider
    top_p: gr.Slider
    max_tokens: gr.Slider
    chatbot: gr.Chatbot
    error: gr.Markdown
    message: gr.Textbox
    send_btn: gr.Button
    stop_btn: gr.Button
    retry_btn: gr.Button
    undo_btn: gr.Button
    new_btn: gr.Button
    examples: gr.Dataset


def build_layout(
    buttons: Panel,
    new_persona: Panel,
    review: Panel,
    max_len: int,
    wire: Callable[[ChatComponents, gr.Blocks], None],
) -> tuple[gr.Blocks, ChatComponents]:
    """Lay the page out inside a ``gr.Blocks``; ``wire`` connects the events (inside the Blocks, where
    Gradio wants them)."""
    with gr.Blocks(title="Persona chat", analytics_enabled=False) as blocks:
        chats, seen, shown = gr.State({}), gr.State(""), gr.State(None)
        with gr.Tabs(selected="chat", elem_id="tabs") as tabs:
            with gr.Tab("Chat", id="chat", elem_id="chat-tab"), gr.Row(equal_height=False, elem_id="layout"):
                side = _side(buttons, max_len)
                chat = _chat()
            with gr.Tab("New persona", id="new", elem_id="new-persona-tab"):
                new_persona.build()
            with gr.Tab("Review", id="review", elem_id="review-tab") as review_tab:
                review.build()
        timer = gr.Timer(REFRESH_SECONDS)
        ui = ChatComponents(
            chats=chats, seen=seen, shown=shown, tabs=tabs, review_tab=review_tab, timer=timer, **side, **chat
        )
        wire(ui, blocks)
    return blocks, ui


def _side(buttons: Panel, max_len: int) -> dict[str, gr.components.Component]:
    """The persona panel beside the conversation."""
    parts: dict[str, gr.components.Component] = {}
    with gr.Column(scale=2, min_width=260, elem_id="persona-panel"):
        parts["persona"] = gr.Dropdown(label="Persona", choices=[], allow_custom_value=True, elem_id="persona-picker")
        with gr.Row(elem_id="persona-card-row"):
            parts["picture"] = gr.Image(
                type="pil",
                format="png",
                show_label=False,
                interactive=False,
                visible=False,
                buttons=[],
                container=False,
                height=112,
                width=112,
                min_width=112,
                scale=0,
                elem_id="persona-picture",
            )
            parts["card"] = gr.Markdown(elem_id="persona-card")
        parts["description"] = gr.Markdown(elem_id="persona-description")
        parts["problems"] = gr.Markdown(visible=False, elem_id="persona-problems")
        parts["version"] = gr.Dropdown(
            label="Version", choices=[("live", LIVE)], value=LIVE, allow_custom_value=True, elem_id="version-picker"
        )
        # Folded: on a phone the side column sits above the chat; the picker's label says "unjudged" or
        # "held back" whatever the fold.
        with gr.Accordion("Fidelity of this version", open=False, elem_id="version-fidelity-box"):
            parts["fidelity"] = gr.Markdown(elem_id="version-fidelity")
        buttons.build()
        with gr.Accordion("Sampling", open=False, elem_id="sampling"):
            parts["temperature"] = gr.Slider(0, 2, value=1.0, step=0.05, label="Temperature", elem_id="temperature")
            parts["top_p"] = gr.Slider(0.05, 1, value=1.0, step=0.05, label="Top-p", elem_id="top-p")
            parts["max_tokens"] = gr.Slider(
                1, max_len, value=min(256, max_len), step=1, label="Reply length (tokens)", elem_id="max-tokens"
            )
    return parts


def _chat() -> dict[str, gr.components.Component]:
    """The conversation, the composer and the chat's buttons."""
    parts: dict[str, gr.components.Component] = {}
    with gr.Column(scale=5, min_width=300, elem_id="chat-panel"):
        parts["chatbot"] = gr.Chatbot(
            show_label=False,
            height=520,
            elem_id="chat",
            buttons=["copy"],
            feedback_options=None,
            placeholder="Pick a persona to start.",
        )
        parts["error"] = gr.Markdown(visible=False, elem_id="chat-error")
        with gr.Row(elem_id="composer", equal_height=True):
            parts["message"] = gr.Textbox(
                show_label=False,
                placeholder="Message",
                lines=1,
                max_lines=6,
                scale=5,
                min_width=120,
                container=False,
                elem_id="message",
            )
            parts["send_btn"] = gr.Button("Send", variant="primary", scale=1, min_width=72, elem_id="send")
            parts["stop_btn"] = gr.Button("Stop", variant="stop", scale=1, min_width=72, visible=False, elem_id="stop")
        with gr.Row(elem_id="chat-actions"):
            parts["retry_btn"] = gr.Button("Retry", size="sm", min_width=60, elem_id="retry")
            parts["undo_btn"] = gr.Button("Undo", size="sm", min_width=60, elem_id="undo")
            parts["new_btn"] = gr.Button("New session", size="sm", min_width=60, elem_id="new-session")
        parts["examples"] = gr.Dataset(
            label="Try asking", components=["textbox"], samples=[], visible=False, elem_id="examples"
        )
    return parts
