"""The project's client for its own server's OpenAI-compatible API: replies to many requests at once.

Fidelity evaluation (its three systems), augmentation and replay all ask through it. For the
evaluation's systems:

* ``base``: the base model's id, no system message (the template's own default prompt);
* ``card``: the base model's id with the full card as the request's system message (a request's
  own system message replaces any persona prompt);
* ``adapter``: ``<name>@vN``, no system message, so the server adds the persona's short system prompt
  exactly as it does for users.

Every request of every system is in flight at once (up to a limit), so the engine batches them; each
request carries its own seed, so two evaluations of one version ask the same questions the same way.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Ask", "Reply", "Sampling", "ServerError", "System", "generate"]


class ServerError(ValueError):
    """The server cannot be reached, or refused a request (the message says which and why)."""


@dataclass(frozen=True)
class System:
    """One way of answering: a served model id and the system message the request carries (if any)."""

    key: str
    model: str
    system_prompt: str | None = None

    def messages(self, conversation: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return head + [{"role": m["role"], "content": m["content"]} for m in conversation]


@dataclass(frozen=True)
class Ask:
    """One request: the conversation so far (no system message) and its seed."""

    conversation: tuple[Mapping[str, str], ...]
    seed: int


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int


@dataclass(frozen=True)
class Sampling:
    """The same for every system, so replies differ only by prompt and adapter."""

    temperature: float
    top_p: float
    max_tokens: int
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def request(self) -> dict[str, float | int]:
        """Keyword arguments of a chat completion request (penalties only when set)."""
        values = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }
        return {key: value for key, value in values.items() if value is not None}


async def _ask_all(
    url: str,
    jobs: Sequence[tuple[System, Sequence[Ask]]],
    sampling: Sampling,
    concurrency: int,
    client_options: Mapping[str, Any],
) -> list[list[Reply]]:
    import openai

    gate = asyncio.Semaphore(concurrency)
    key = os.environ.get("PERSONA_EVAL_API_KEY") or "unused"  # the server's key when it has keys
    options = {"api_key": key, "max_retries": 0, "timeout": 600, **client_options}
    async with openai.AsyncOpenAI(base_url=url, **options) as client:

        async def one(system: System, ask: Ask) -> Reply:
            async with gate:
                try:
                    response = await client.chat.completions.create(
                        model=system.model,
                        messages=system.messages(ask.conversation),
                        seed=ask.seed,
                        **sampling.request(),
                    )
                except openai.APIConnectionError as exc:
                    raise ServerError(f"cannot reach the server at {url}: {exc}") from exc
                except openai.APIStatusError as exc:
                    raise ServerError(
                        f"the server at {url} refused model '{system.model}' ({exc.status_code}): {exc.message}"
                    ) from exc
            usage = response.usage.prompt_tokens if response.usage else 0
            return Reply(text=response.choices[0].message.content or "", prompt_tokens=usage)

        per_system = [[one(system, ask) for ask in asks] for system, asks in jobs]
        flat = await asyncio.gather(*(task for tasks in per_system for task in tasks))
    out, at = [], 0
    for tasks in per_system:
        out.append(list(flat[at : at + len(tasks)]))
        at += len(tasks)
    return out


def generate(
    url: str,
    jobs: Sequence[tuple[System, Sequence[Ask]]],
    sampling: Sampling,
    *,
    concurrency: int = 24,
    client_options: Mapping[str, Any] | None = None,
) -> list[list[Reply]]:
    """Replies to every ``Ask`` of every job, in order; all requests share one concurrency limit.

    ``url`` is the API root (``http://host:port/v1``). ``client_options`` go to ``openai.AsyncOpenAI``
    (a custom ``http_client``). Raises :class:`ServerError` when the server cannot be reached or
    refuses a model.
    """
    return asyncio.run(_ask_all(url, jobs, sampling, concurrency, client_options or {}))
