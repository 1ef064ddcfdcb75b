"""The page's "New persona" tab: a name, chat exports picked or dropped, their report, then "Train".

It calls what ``POST /v1/personas/uploads`` and ``POST /v1/personas`` call (:mod:`service.uploads`),
so the page and the API accept, refuse and store alike. The report comes as soon as files are picked,
before anything is stored in a persona or trained.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from store.ingest_report import IngestReport, SpeakerCount
from store.registry import PersonaStore

from ..errors import APIError
from ..personas.actions import queue_training, require_queue
from ..uploads import Uploads, path_chunks
from .layout import ChatComponents
from .session import error_text

Updates = dict[Any, Any]
Opens = Callable[[str, dict[str, Any]], Updates]
"""The chat tab with a persona picked and on show (its conversation from the page's chats)."""

CHARACTER_FROM = {
    "card": "as named in the persona's card",
    "name": "named like the persona",
    "guess": "the one speaker in every file",
}


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _speakers(speakers: list[SpeakerCount], limit: int = 6) -> str:
    shown = ", ".join(f"{s.name} ({s.messages})" for s in speakers[:limit])
    return shown + (f", and {len(speakers) - limit} more" if len(speakers) > limit else "") if shown else "—"


def report_markdown(report: IngestReport) -> str:
    """The ingest report for the page: a row per file (format, counts, speakers, problems), then who the
    character is, its turns and the examples they give."""
    lines = [
        "| file | format | messages | speakers | character turns | problems |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for f in report.files:
        what = f.format or ("skipped: " + f.skipped if f.skipped else "not a chat export")
        turns = "—" if f.character_turns is None else f.character_turns
        problems = "; ".join(f.problems) or "none"
        lines.append(
            f"| {_cell(f.file)} | {_cell(what)} | {f.messages} | {_cell(_speakers(f.speakers, 4))} | {turns} "
            f"| {_cell(problems)} |"
        )
    lines.append("")
    if report.character:
        how = CHARACTER_FROM.get(report.character_from or "", "")
        lines.append(f"**Character:** {', '.join(report.character)}" + (f" ({how})" if how else ""))
    elif report.role_based and not report.speakers:
        lines.append("**Character:** the assistant in the role-based logs")
    else:
        lines.append("**Character:** not obvious: pick the speaker who is the character below.")
    lines.append(f"**Speakers:** {_speakers(report.speakers, 12)}")
    lines.append(
        f"**Character turns:** {report.character_turns} · **training examples:** {report.train_examples}"
        f" ({report.heldout_examples} held out)"
    )
    if report.error and report.error.code != "no_character_speaker":
        lines.append(f"\n⚠️ {report.error.message}")
    return "\n".join(lines)


class NewPersonaPanel:
    """Components and handlers of the tab; :meth:`build` lays them out inside the current ``gr.Tab``."""

    opens: Opens

    def __init__(self, uploads: Uploads, store: PersonaStore, training: Callable[[], Any]) -> None:
        self.uploads = uploads
        self.store = store
        self.training = training
        """The server's job queue now (None before start-up and on a server without one)."""

    def build(self) -> None:
        gr.Markdown(
            "Name the persona and pick its chat exports (WhatsApp, Telegram, Discord, OpenAI or ShareGPT "
            "JSON, Alpaca, plain transcripts). The report shows what they give before anything is trained.",
            elem_id="new-intro",
        )
        self.upload = gr.State(None)  # the staged upload's id
        self.name = gr.Textbox(label="Name", placeholder="e.g. baker (a-z, 0-9, - and _)", elem_id="new-name")
        self.files = gr.File(label="Chat exports", file_count="multiple", type="filepath", elem_id="new-files")
        self.report = gr.Markdown(elem_id="new-report")
        self.speakers = gr.Dropdown(
            label="Which speaker is the character?",
            choices=[],
            multiselect=True,
            visible=False,
            elem_id="new-speakers",
        )
        self.error = gr.Markdown(visible=False, elem_id="new-error")
        self.train = gr.Button("Train", variant="primary", interactive=False, elem_id="new-train")

    def wire(self, ui: ChatComponents, side: list[Any], conversation: list[Any], opens: Opens) -> None:
        """Connect the tab; a created persona is shown in the chat tab with ``opens``."""
        self.opens = opens
        quiet: dict[str, Any] = {"show_progress": "hidden", "api_visibility": "private"}
        form = [self.upload, self.report, self.speakers, self.error, self.train]
        self.files.change(self.picked, [self.files, self.name], form, **quiet)
        self.train.click(
            self.create,
            [self.name, self.upload, self.speakers, ui.chats],
            [*form, self.name, self.files, ui.tabs, *side, *conversation],
            **quiet,
        )

    def _failed(self, message: str) -> Updates:
        gr.Warning(message)
        return {self.error: gr.Markdown(value=f"⚠️ {message}", visible=True)}

    async def picked(self, paths: list[str] | None, name: str | None) -> Updates:
        """Files picked (or cleared): stage them and show their report, or say what is wrong with them."""
        cleared: Updates = {
            self.upload: None,
            self.report: "",
            self.speakers: gr.Dropdown(choices=[], value=[], visible=False),
            self.error: gr.Markdown(value="", visible=False),
            self.train: gr.Button(interactive=False),
        }
        if not paths:
            return cleared
        try:
            files = [(Path(p).name, path_chunks(Path(p))) for p in paths]
            upload = await self.uploads.stage(files, (name or "").strip())
        except Exception as exc:  # the API's 400 naming the file, or a failed report
            return {**cleared, **self._failed(error_text(exc))}
        report = upload.report
        blocking = report.error is not None and report.error.code != "no_character_speaker"
        ask = not report.character and bool(report.speakers)
        return {
            self.upload: upload.id,
            self.report: report_markdown(report),
            self.speakers: gr.Dropdown(choices=[s.name for s in report.speakers], value=[], visible=ask),
            self.error: gr.Markdown(value="", visible=False),
            self.train: gr.Button(interactive=not blocking),
        }

    async def create(
        self, name: str | None, upload: str | None, speakers: list[str] | None, chats: dict[str, Any]
    ) -> Updates:
        """Train: create the persona from the staged files, queue its training, and show it in the chat."""
        name = (name or "").strip()
        if not upload:
            return self._failed("Pick the persona's chat exports first.")
        if not name:
            return self._failed("name: give the persona a name (a-z, 0-9, '-' and '_').")
        try:
            training = require_queue(self.training())
            persona = await self.uploads.create(self.store, name, upload, list(speakers or []))
            queue_training(training, persona, "page")
        except APIError as exc:  # the API's 400/404/409 with the field named
            if exc.body.error.code == "persona_exists":
                return self._failed(f"name: a persona named '{name}' exists; pick another name.")
            return self._failed(error_text(exc))
        except Exception as exc:
            return self._failed(error_text(exc))
        gr.Info(f"{persona.title} is queued for training; it answers from its card meanwhile.")
        return {
            **self.opens(persona.name, chats),
            self.upload: None,
            self.name: "",
            self.files: None,
            self.report: "",
            self.speakers: gr.Dropdown(choices=[], value=[], visible=False),
            self.error: gr.Markdown(value="", visible=False),
            self.train: gr.Button(interactive=False),
        }
