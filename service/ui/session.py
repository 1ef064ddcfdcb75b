"""The chat page's conversation model, without Gradio: turns, requests, labels and messages.

A conversation is a list of turns, ``{"role": "user" | "assistant", "content": str, "by": str | None}``;
``by`` names the persona and version that wrote an assistant reply (``"wren · v2"``), and is ``None`` for
the user's turns and the card's greeting. The page keeps one conversation per persona.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from store.names import parse_version

from ..errors import APIError, validation_error
from ..personas.protocol import PersonaStatus
from ..protocol import ChatCompletionRequest

Turn = dict[str, Any]

LIVE = "live"
"""The version choice that follows the persona's live version."""

DEFAULT_MAX_TOKENS = 256


def model_id(name: str, version: str | None) -> str:
    """The request's ``model``: ``"wren"`` for the live version, ``"wren@v1"`` for a given one."""
    if not version or version == LIVE:
        return name
    return f"{name}@{version}"


def caption(name: str, version_label: str) -> str:
    """Which persona and version wrote a reply: ``"wren · v2"``, ``"wren · card"``."""
    return f"{name} · {version_label}"


def new_session(greeting: str | None) -> list[Turn]:
    """A fresh conversation: the card's greeting as the first message, when it has one."""
    return [assistant_turn(greeting)] if greeting else []


def user_turn(text: str) -> Turn:
    return {"role": "user", "content": text, "by": None}


def assistant_turn(text: str, by: str | None = None) -> Turn:
    return {"role": "assistant", "content": text, "by": by}


def build_request(
    name: str,
    version: str | None,
    history: Iterable[Turn],
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | float | None,
) -> ChatCompletionRequest:
    """The API request the page sends for this conversation: what a client of ``/v1`` would send.

    Raises :class:`pydantic.ValidationError` for values the API would refuse.
    """
    messages = [{"role": turn["role"], "content": turn["content"]} for turn in history]
    return ChatCompletionRequest(
        model=model_id(name, version),
        messages=messages,
        temperature=temperature,
        top_p=top_p,
        max_tokens=int(max_tokens) if max_tokens else None,
        stream=True,
    )


def last_user_index(history: list[Turn]) -> int | None:
    for index in range(len(history) - 1, -1, -1):
        if history[index]["role"] == "user":
            return index
    return None


def undo(history: list[Turn]) -> tuple[list[Turn], str]:
    """Drop the last user message and the replies after it; return it so it can be edited and resent."""
    index = last_user_index(history)
    if index is None:
        return list(history), ""
    return list(history[:index]), history[index]["content"]


def for_retry(history: list[Turn]) -> list[Turn] | None:
    """The conversation up to and including the last user message, or ``None`` when there is none."""
    index = last_user_index(history)
    if index is None:
        return None
    return list(history[: index + 1])


def to_chatbot(history: list[Turn]) -> list[dict[str, str]]:
    """Messages for ``gr.Chatbot``; each reply carries a small caption naming the version that wrote it."""
    messages = []
    for turn in history:
        content = turn["content"]
        if turn["role"] == "assistant" and turn.get("by"):
            tag = f'<span class="reply-version">{html.escape(turn["by"])}</span>'
            content = f"{content}\n\n{tag}" if content else tag
        messages.append({"role": turn["role"], "content": content})
    return messages


def persona_label(status: PersonaStatus) -> str:
    """One line of the persona list: ``"Wren · served from its card"``, ``"Corvin · trained v2"``."""
    return f"{status.display_name} · {status.label}"


def persona_choices(statuses: Iterable[PersonaStatus]) -> list[tuple[str, str]]:
    return [(persona_label(status), status.name) for status in statuses]


def problems_markdown(problems: dict[str, str]) -> str:
    """Persona folders that cannot be served, and why (empty when there are none)."""
    return "\n".join(f"- **{name}** is not loaded: {reason}" for name, reason in sorted(problems.items()))


def side_signature(name: str | None, statuses: list[PersonaStatus], problems: dict[str, str]) -> str:
    """What the side panel shows for ``name``; a refresh that would show the same sends nothing."""
    current = next((s for s in statuses if s.name == name), None)
    shown = current.model_dump(exclude={"training"}) if current else None
    return repr((persona_choices(statuses), shown, current.label if current else None, sorted(problems.items())))


def version_choices(status: PersonaStatus | None) -> list[tuple[str, str]]:
    """The live version first, then every version, newest first."""
    if status is None:
        return [("live", LIVE)]
    live = status.live_version or "card"
    if status.live_gate in ("unjudged", "held back"):  # the gate's word on the live version, beside the picker
        live += f", {status.live_gate}"
    choices = [(f"live ({live})", LIVE)]
    choices += [
        (v.version, v.version)
        for v in sorted(status.versions, key=lambda v: parse_version(v.version) or 0, reverse=True)
    ]
    return choices


def card_markdown(status: PersonaStatus) -> str:
    """Name and status of the persona, for the page's side panel (the description goes below it)."""
    line = f"*{status.label}*"
    if status.versions:
        line += " · versions " + ", ".join(v.version for v in status.versions)
    return f"### {status.display_name}\n{line}"


def description_markdown(status: PersonaStatus) -> str:
    """The persona's description below its name, or why it cannot be served (the file and field)."""
    if status.error:
        return f"⚠️ Not served until its card is fixed: {status.error}"
    return status.description.strip()


def sampling_defaults(status_sampling: Any, max_len: int) -> tuple[float, float, int]:
    """Slider values for a persona: its card's sampling defaults, else OpenAI's, within the context."""
    temperature, top_p = status_sampling.effective_temperature(), status_sampling.effective_top_p()
    max_tokens = status_sampling.max_tokens or DEFAULT_MAX_TOKENS
    return temperature, top_p, max(1, min(max_tokens, max_len))


def error_text(exc: BaseException) -> str:
    """A one-line message for the page: the API's own message where there is one, never a traceback."""
    if isinstance(exc, APIError):
        return exc.body.error.message
    if isinstance(exc, ValidationError):
        return validation_error(list(exc.errors())).body.error.message
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"The reply failed: {detail}"
