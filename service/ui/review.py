"""The page's review tab: a persona's pending synthetic examples, one at a time, a batch at a time.

Accept, edit the reply then accept, reject with a reason, skip, or accept the rest of the batch. It
changes the same files as ``persona review`` and the API (:mod:`service.synthetic_review`), so only
what a person accepted is trained on.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from fastapi import FastAPI

from store import synthetic
from store.errors import StoreError
from store.registry import Persona, PersonaStore
from store.synthetic import SyntheticExample

from ..errors import APIError
from ..synthetic_review import batch_counts, settle_batch

NOTHING = "Nothing waiting for review. `persona augment <name>` generates examples in the persona's voice."

Updates = dict[Any, Any]


class ReviewPanel:
    """Components and handlers of the review tab; :meth:`build` lays them out in the current Blocks."""

    def __init__(self, app: FastAPI) -> None:
        self.store: PersonaStore = app.state.store

    def build(self) -> None:
        with gr.Column(elem_id="review-panel"):
            self.persona = gr.Dropdown(label="Persona", choices=[], elem_id="review-persona")
            self.header = gr.Markdown(NOTHING, elem_id="review-header")
            self.prompt = gr.Textbox(label="User", interactive=False, lines=2, elem_id="review-prompt")
            self.reply = gr.Textbox(label="Reply (edit it before accepting)", lines=4, elem_id="review-reply")
            self.reason = gr.Textbox(label="Reason for rejecting", lines=1, elem_id="review-reason")
            with gr.Row():
                self.accept_btn = gr.Button("Accept", variant="primary", elem_id="review-accept")
                self.reject_btn = gr.Button("Reject", variant="stop", elem_id="review-reject")
                self.skip_btn = gr.Button("Skip", elem_id="review-skip")
                self.batch_btn = gr.Button("Accept the rest of this batch", elem_id="review-accept-batch")
            self.message = gr.Markdown(visible=False, elem_id="review-message")
            self.current = gr.State(None)  # the example on show: (id, batch)
            self.skipped = gr.State([])  # ids skipped in this visit

    def wire(self, tab: gr.Tab) -> None:
        private: dict[str, Any] = {"api_visibility": "private", "show_progress": "hidden"}
        shown = [self.persona, self.header, self.prompt, self.reply, self.reason, self.message, self.current]
        tab.select(self.open, [self.persona], shown + [self.skipped], **private)
        self.persona.select(self.show, [self.persona, self.skipped], shown, **private)
        review_inputs = [self.persona, self.current, self.reply, self.reason, self.skipped]
        self.accept_btn.click(self.accept, review_inputs, shown, **private)
        self.reject_btn.click(self.reject, review_inputs, shown, **private)
        self.skip_btn.click(self.skip, [self.persona, self.current, self.skipped], shown + [self.skipped], **private)
        self.batch_btn.click(self.accept_batch, [self.persona, self.current, self.skipped], shown, **private)

    # ------------------------------------------------------------------ handlers

    def _persona(self, name: str | None) -> Persona | None:
        if not name:
            return None
        try:
            return self.store.get(name)
        except StoreError:
            return None

    def _waiting(self) -> list[str]:
        """Personas with examples waiting for review, first in the picker."""
        names = self.store.names()
        waiting = [n for n in names if any(c.pending for c in self._counts(n))]
        return waiting + [n for n in names if n not in waiting]

    def _counts(self, name: str) -> list:
        persona = self._persona(name)
        return batch_counts(persona) if persona else []

    def open(self, name: str | None) -> Updates:
        choices = self._waiting()
        name = name if name in choices else (choices[0] if choices else None)
        updates = self.show(name, [])
        updates[self.persona] = gr.Dropdown(choices=choices, value=name)
        updates[self.skipped] = []
        return updates

    def _next(self, persona: Persona, skipped: list[str]) -> SyntheticExample | None:
        pending = [e for e in synthetic.all_examples(persona.path) if e.status == "pending" and e.id not in skipped]
        return pending[0] if pending else None

    def show(self, name: str | None, skipped: list[str], message: str = "") -> Updates:
        persona = self._persona(name)
        example = self._next(persona, skipped) if persona else None
        notice = gr.Markdown(message, visible=bool(message))
        if example is None:
            header = NOTHING if persona is None else f"**{persona.title}**: nothing waiting for review."
            return {
                self.header: header,
                self.prompt: "",
                self.reply: gr.Textbox(value="", interactive=False),
                self.reason: "",
                self.message: notice,
                self.current: None,
            }
        counts = next(c for c in batch_counts(persona) if c.batch == example.batch)
        total = counts.pending + counts.accepted + counts.rejected
        header = (
            f"**{persona.title}**, batch {example.batch}: {counts.pending} of {total} waiting "
            f"({counts.accepted} accepted, {counts.rejected} rejected). From {example.source.model}."
        )
        return {
            self.header: header,
            self.prompt: example.prompt,
            self.reply: gr.Textbox(value=example.reply, interactive=True),
            self.reason: "",
            self.message: notice,
            self.current: (example.id, example.batch),
        }

    def _review(self, name: str | None, current: Any, status: str, reply: str | None, reason: str | None) -> str:
        persona = self._persona(name)
        if persona is None or not current:
            return "Pick a persona with examples waiting."
        if status == "accepted" and reply is not None and not reply.strip():
            return "The reply is empty: write one, or reject the example."
        try:
            synthetic.review(persona.path, current[0], status, reply=reply, reason=reason)  # type: ignore[arg-type]
        except KeyError:
            return "That example is gone (reviewed elsewhere); here is the next one."
        return ""

    def accept(self, name: str | None, current: Any, reply: str, reason: str, skipped: list[str]) -> Updates:
        return self.show(name, skipped, self._review(name, current, "accepted", reply, None))

    def reject(self, name: str | None, current: Any, reply: str, reason: str, skipped: list[str]) -> Updates:
        return self.show(name, skipped, self._review(name, current, "rejected", None, reason.strip() or "by review"))

    def skip(self, name: str | None, current: Any, skipped: list[str]) -> Updates:
        skipped = [*skipped, current[0]] if current else skipped
        return {**self.show(name, skipped), self.skipped: skipped}

    def accept_batch(self, name: str | None, current: Any, skipped: list[str]) -> Updates:
        persona = self._persona(name)
        if persona is None or not current:
            return self.show(name, skipped, "Pick a persona with examples waiting.")
        try:
            settled = settle_batch(persona, current[1], "accepted")
        except APIError as exc:
            return self.show(name, skipped, exc.body.error.message)
        return self.show(name, skipped, f"Accepted {len(settled)} examples of batch {current[1]}.")
