"""OpenAI's legacy text-completion request and response (``/v1/completions``), the wire format only."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from .protocol import SamplingFields, Usage, unsupported

TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(SamplingFields):
    """OpenAI's text completion: the prompt is taken as given (no chat template, no system prompt)."""

    prompt: (
        str
        | TokenIds
        | Annotated[list[str], Field(min_length=1, max_length=16)]
        | Annotated[list[TokenIds], Field(min_length=1, max_length=16)]
    ) = Field(description="Text or token ids, or a list of either (each gets n choices).")
    echo: bool = Field(default=False, description="Put the prompt's text before each reply.")
    logprobs: int | None = Field(
        default=None, ge=0, le=5, description="The sampled token's log probability and the likeliest (0-5)."
    )
    best_of: int | None = unsupported("it returns every sampled choice (use n)", ge=1, le=1)
    suffix: None = unsupported("it does not insert text")

    def prompts(self) -> list[str | list[int]]:
        """Each prompt: text, or token ids."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if self.prompt and isinstance(self.prompt[0], int):
            return [list(self.prompt)]  # type: ignore[arg-type]
        return list(self.prompt)  # type: ignore[arg-type]


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy ``logprobs``: parallel lists, one entry per reply token."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
