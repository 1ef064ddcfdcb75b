"""OpenAI-compatible request and response models (the wire format, no serving logic)."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import PydanticCustomError

from .personas.protocol import PersonaStatus

SEED_BOUND = 2**63
"""vLLM's engine takes 64-bit signed seeds, ``-SEED_BOUND <= seed < SEED_BOUND``; larger ones cannot reach it.
(Both ends are exact as JSON numbers, so a client reading the schema in floating point gets them right.)"""

UNSUPPORTED = "x-unsupported"
"""Marks a parameter of OpenAI's API that this server cannot honour, with the reason, in the schema."""


def unsupported(reason: str, **constraints: Any) -> Any:
    """A parameter the server cannot honour: its type admits only values that ask for nothing (null,
    or OpenAI's default); any other value is refused naming it, so nothing is silently ignored."""
    return Field(
        default=None,
        description=f"Not supported: {reason}. Accepted only when it asks for nothing.",
        json_schema_extra={UNSUPPORTED: reason},
        **constraints,
    )


class OpenAIModel(BaseModel):
    """A request part: unknown fields are refused (as OpenAI's API does), and so are values of the
    parameters marked :func:`unsupported` that would ask for something."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="wrap")
    @classmethod
    def _refuse_unsupported(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        extra = cls.model_fields[info.field_name].json_schema_extra if info.field_name else None
        if not isinstance(extra, dict) or UNSUPPORTED not in extra:
            return handler(value)
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError(
                "unsupported_parameter",
                "Unsupported parameter: '{param}' is not supported by this server ({reason}).",
                {"param": info.field_name, "reason": extra[UNSUPPORTED]},
            ) from None


class TextPart(OpenAIModel):
    type: Literal["text"]
    text: str


class ResponseFormatText(OpenAIModel):
    type: Literal["text"]


class ChatMessage(OpenAIModel):
    """One message; what a client echoes back from an earlier reply (``refusal`` as null...) passes."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(default=None, description="Accepted; the prompt format has no place for it.")
    refusal: None = unsupported("an earlier refusal cannot be replayed")
    tool_calls: list[dict[str, Any]] | None = unsupported("personas do not call tools", max_length=0)
    function_call: None = unsupported("personas do not call functions")
    audio: None = unsupported("replies are text only")
    annotations: list[dict[str, Any]] | None = unsupported("it adds no annotations", max_length=0)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(OpenAIModel):
    include_usage: bool = False


def _finite(**constraints: Any) -> Any:
    return Field(default=None, allow_inf_nan=False, **constraints)


class ChatCompletionRequest(OpenAIModel):
    """OpenAI's chat request, as far as this server honours it.

    A parameter the server cannot honour is refused by name (a 400) unless its value asks for
    nothing (``"logprobs": false``, ``"response_format": {"type": "text"}``); so is an unknown one.
    """

    model: str = Field(
        description="A persona ('wren': its live version), a version ('wren@v2') or the base model's id."
    )
    messages: list[ChatMessage] = Field(min_length=1)
    n: int = Field(default=1, ge=1, le=16)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = Field(default=None, description="Up to 4 sequences.")
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = _finite(ge=0.0, le=2.0)
    top_p: float | None = _finite(gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=-SEED_BOUND, lt=SEED_BOUND, description="Same seed, same reply.")
    presence_penalty: float | None = _finite(ge=-2.0, le=2.0)
    frequency_penalty: float | None = _finite(ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, description="Accepted; an end-user id changes nothing here.")
    safety_identifier: str | None = Field(default=None, description="Accepted; an end-user id changes nothing here.")
    prompt_cache_key: str | None = Field(
        default=None, description="Accepted; prompts share vLLM's prefix cache anyway."
    )
    parallel_tool_calls: bool | None = Field(default=None, description="Accepted; there are no tools to call.")

    logprobs: Literal[False] | None = unsupported("it returns no log probabilities")
    top_logprobs: Literal[0] | None = unsupported("it returns no log probabilities")
    logit_bias: dict[str, float] | None = unsupported("it does not bias tokens", max_length=0)
    response_format: ResponseFormatText | None = unsupported("replies are plain text; JSON output is not enforced")
    tools: list[dict[str, Any]] | None = unsupported("personas do not call tools", max_length=0)
    tool_choice: Literal["none", "auto"] | None = unsupported("personas do not call tools")
    functions: list[dict[str, Any]] | None = unsupported("personas do not call functions", max_length=0)
    function_call: Literal["none", "auto"] | None = unsupported("personas do not call functions")
    audio: None = unsupported("replies are text only")
    modalities: list[Literal["text"]] | None = unsupported("replies are text only")
    prediction: None = unsupported("it has no predicted outputs")
    reasoning_effort: None = unsupported("the models do not reason before answering")
    verbosity: None = unsupported("it has no verbosity control")
    web_search_options: None = unsupported("it does not search the web")
    store: Literal[False] | None = unsupported("it stores no completions")
    metadata: None = unsupported("it stores no completions")
    service_tier: Literal["auto", "default"] | None = unsupported("it has one service tier")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "persona-service"
    root: str | None = None
    parent: str | None = None
    persona: PersonaStatus | None = Field(default=None, description="The persona behind a persona or version id.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
