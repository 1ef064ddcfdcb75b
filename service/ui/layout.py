"""The chat page's layout: every component, with the ids the browser tests find them by."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from .session import LIVE

if TYPE_CHECKING:
    from .page import ChatPage

REFRESH_SECONDS = 4.0


def build_layout(page: ChatPage) -> gr.Blocks:
    """Lay the page's components out inside a ``gr.Blocks`` and wire them to ``page``'s handlers."""
    with gr.Blocks(title="Persona chat", analytics_enabled=False) as blocks:
        page.chats = gr.State({})  # persona name -> its conversation (list of turns)
        page.seen = gr.State("")  # what the side panel shows, to skip refreshes that change nothing
        page.shown = gr.State(None)  # the persona on show (picking it again changes nothing)
        with gr.Tabs(selected="chat", elem_id="tabs") as page.tabs:
            with gr.Tab("Chat", id="chat", elem_id="chat-tab"):
                _chat(page)
            with gr.Tab("New persona", id="new", elem_id="new-persona-tab"):
                page.new_persona.build()
            with gr.Tab("Review", id="review", elem_id="review-tab") as page.review_tab:
                page.review.build()
        page.timer = gr.Timer(REFRESH_SECONDS)
        wire(page, blocks)
    return blocks


def _chat(page: ChatPage) -> None:
    """The persona panel beside the conversation."""
    with gr.Row(equal_height=False, elem_id="layout"):
        with gr.Column(scale=2, min_width=260, elem_id="persona-panel"):
            page.persona = gr.Dropdown(label="Persona", choices=[], allow_custom_value=True, elem_id="persona-picker")
            with gr.Row(elem_id="persona-card-row"):
                page.picture = gr.Image(
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
                page.card = gr.Markdown(elem_id="persona-card")
            page.description = gr.Markdown(elem_id="persona-description")
            page.problems = gr.Markdown(visible=False, elem_id="persona-problems")
            page.version = gr.Dropdown(
                label="Version",
                choices=[("live", LIVE)],
                value=LIVE,
                allow_custom_value=True,
                elem_id="version-picker",
            )
            page.fidelity = gr.Markdown(elem_id="version-fidelity")
            page.buttons.build()
            with gr.Accordion("Sampling", open=False, elem_id="sampling"):
                page.temperature = gr.Slider(0, 2, value=1.0, step=0.05, label="Temperature", elem_id="temperature")
                page.top_p = gr.Slider(0.05, 1, value=1.0, step=0.05, label="Top-p", elem_id="top-p")
                page.max_tokens = gr.Slider(
                    1,
                    page.max_len,
                    value=min(256, page.max_len),
                    step=1,
                    label="Reply length (tokens)",
                    elem_id="max-tokens",
                )
        with gr.Column(scale=5, min_width=300, elem_id="chat-panel"):
            page.chatbot = gr.Chatbot(
                show_label=False,
                height=520,
                elem_id="chat",
                buttons=["copy"],
                feedback_options=None,
                placeholder="Pick a persona to start.",
            )
            page.error = gr.Markdown(visible=False, elem_id="chat-error")
            with gr.Row(elem_id="composer", equal_height=True):
                page.message = gr.Textbox(
                    show_label=False,
                    placeholder="Message",
                    lines=1,
                    max_lines=6,
                    scale=5,
                    min_width=120,
                    container=False,
                    elem_id="message",
                )
                page.send_btn = gr.Button("Send", variant="primary", scale=1, min_width=72, elem_id="send")
                page.stop_btn = gr.Button("Stop", variant="stop", scale=1, min_width=72, visible=False, elem_id="stop")
            with gr.Row(elem_id="chat-actions"):
                page.retry_btn = gr.Button("Retry", size="sm", min_width=60, elem_id="retry")
                page.undo_btn = gr.Button("Undo", size="sm", min_width=60, elem_id="undo")
                page.new_btn = gr.Button("New session", size="sm", min_width=60, elem_id="new-session")
            page.examples = gr.Dataset(
                label="Try asking", components=["textbox"], samples=[], visible=False, elem_id="examples"
            )


def wire(page: ChatPage, blocks: gr.Blocks) -> None:
    """Connect every component's events to the page's handlers."""
    private: dict[str, Any] = {"api_visibility": "private"}
    sampling = [page.temperature, page.top_p, page.max_tokens]
    side = [
        page.persona,
        page.version,
        page.card,
        page.description,
        page.picture,
        page.problems,
        page.seen,
        page.shown,
        page.buttons.pin,
        page.fidelity,
    ]
    conversation = [page.chatbot, page.chats, page.error, page.examples, *sampling]
    controls = [
        page.send_btn,
        page.stop_btn,
        page.retry_btn,
        page.undo_btn,
        page.new_btn,
        page.persona,
        page.version,
    ]

    quiet: dict[str, Any] = {"show_progress": "hidden", **private}
    blocks.load(page.load, [page.chats], side + conversation, **private)
    page.persona.select(page.pick, [page.persona, page.shown, page.chats], side + conversation, **quiet)
    page.timer.tick(page.refresh, [page.persona, page.seen, page.version], side, concurrency_limit=None, **quiet)
    page.version.change(page.show_fidelity, [page.persona, page.version], [page.fidelity], **quiet)
    replying = dict(concurrency_limit=None, show_progress="hidden", **private)
    gr.on(
        [page.send_btn.click, page.message.submit],
        page.send,
        [page.message, page.persona, page.version, *sampling, page.chats],
        [page.message, page.chatbot, page.chats, page.error, *controls],
        **replying,
    )
    page.retry_btn.click(
        page.retry,
        [page.persona, page.version, *sampling, page.chats],
        [page.message, page.chatbot, page.chats, page.error, *controls],
        **replying,
    )
    # Stop ends the reply from inside (the engine request is aborted and the page keeps what came);
    # cancelling the event from outside would leave the chat in Gradio's error state.
    page.stop_btn.click(page.stop, None, [page.stop_btn], queue=False, **private)
    page.undo_btn.click(
        page.undo, [page.persona, page.chats], [page.message, page.chatbot, page.chats, page.error], **quiet
    )
    page.chatbot.clear(page.new_session, [page.persona, page.chats], [page.chatbot, page.chats, page.error], **quiet)
    page.new_btn.click(page.new_session, [page.persona, page.chats], [page.chatbot, page.chats, page.error], **quiet)
    page.examples.click(lambda sample: sample[0] if sample else "", [page.examples], [page.message], **quiet)
    page.buttons.wire(side, conversation)
    page.new_persona.wire(side, conversation)
    page.review.wire(page.review_tab)
