"""OpenAI-compatible request and response models (the wire format, no serving logic)."""

from __future__ import annotations

import time
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
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


def _seed_at_the_ends(value: Any) -> Any:
    """An integer seed whose nearest double is an end of the range is read as the nearest seed in it:
    a client holding numbers as doubles writes -2**63 as -9223372036854776000 and 2**63 - 1 as
    9223372036854775808, and means the end."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > SEED_BOUND // 2:
        if float(value) == -SEED_BOUND:
            return -SEED_BOUND
        if float(value) == SEED_BOUND:
            return SEED_BOUND - 1
    return value


Seed = Annotated[int, Field(ge=-SEED_BOUND, lt=SEED_BOUND), BeforeValidator(_seed_at_the_ends)]
"""The bounds before the validator: after it, pydantic writes them into the schema as ``ge``/``lt``, which
JSON Schema does not know, and clients reading the schema saw no bounds."""

IGNORED = "x-ignored"
"""Marks a field that is accepted and ignored, with the reason, in the schema."""

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


def _arms(annotation: Any) -> list[Any]:
    """The alternatives of a union (and the type inside ``Annotated``), flattened."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _arms(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return [arm for arg in get_args(annotation) for arm in _arms(arg)]
    return [annotation]


def _misplaced_boolean(value: Any, annotation: Any) -> bool:
    """Whether ``value`` holds a JSON true or false, at its top or inside its lists and objects, where
    ``annotation`` asks for something else there."""
    arms = _arms(annotation)
    if isinstance(value, bool):
        return not any(
            arm is bool
            or arm is Any
            or (get_origin(arm) is Literal and any(isinstance(a, bool) for a in get_args(arm)))
            for arm in arms
        )
    if isinstance(value, dict):
        inner, items = (
            [get_args(arm)[1] for arm in arms if get_origin(arm) is dict and len(get_args(arm)) == 2],
            value.values(),
        )
    elif isinstance(value, list):
        inner, items = [get_args(arm)[0] for arm in arms if get_origin(arm) is list and get_args(arm)], value
    else:
        return False
    return bool(inner) and any(all(_misplaced_boolean(item, kind) for kind in inner) for item in items)


class RequestModel(BaseModel):
    """A request body part whose numbers are numbers: JSON ``true`` and ``false`` are refused where the
    schema asks for anything else (pydantic alone reads them as 1 and 0, so ``"seed": false`` was a
    seed and ``"logit_bias": {"50": true}`` a bias of 1). Parts that are models check their own fields."""

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name and _misplaced_boolean(value, cls.model_fields[info.field_name].annotation):
            raise PydanticCustomError("bool_type_not_allowed", "Input should not be true or false here")
        return value


class OpenAIModel(RequestModel):
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


def ignored(reason: str) -> Any:
    """A field other servers (or OpenAI) define that asks for nothing this server does: accepted, and
    named in the reply's ``Warning`` header when it asks for something (refused by ``strict_parameters``)."""
    return Field(default=None, description=f"Ignored: {reason}.", json_schema_extra={IGNORED: reason})


class SamplingFields(OpenAIModel):
    """What chat and text completions share: the engine's sampling controls, in OpenAI's names where
    OpenAI has one and vLLM's otherwise. A field no one here knows is kept aside (``model_extra``)
    and ignored with a warning, as vLLM's own server does."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(
        description="A persona ('wren': its live version), a version ('wren@v2') or the base model's id."
    )
    n: int = Field(default=1, ge=1, le=16)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = Field(default=None, description="Up to 4 sequences.")
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = _finite(ge=0.0, le=2.0)
    top_p: float | None = _finite(gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1, description="Sample from the k likeliest tokens; 0 or -1: all.")
    min_p: float | None = _finite(
        ge=0.0, le=1.0, description="Drop tokens below min_p times the likeliest's probability."
    )
    repetition_penalty: float | None = _finite(
        gt=0.0, le=10.0, description="Above 1 discourages tokens already in the prompt or reply (vLLM's name)."
    )
    seed: Seed | None = Field(default=None, description="Same seed, same reply.")
    presence_penalty: float | None = _finite(ge=-2.0, le=2.0)
    frequency_penalty: float | None = _finite(ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        default=None,
        description="Token id (as a string) to a bias added to its logit, clamped to -100..100; "
        "-100 keeps a token out, 100 all but forces it.",
    )
    min_tokens: int | None = Field(default=None, ge=0, description="Tokens generated before a stop may end the reply.")
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, max_length=64, description="Token ids that end the reply, besides the model's own end token."
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = ignored("an end-user id changes nothing here")
    safety_identifier: str | None = ignored("an end-user id changes nothing here")
    prompt_cache_key: str | None = Field(
        default=None, description="Accepted; prompts share vLLM's prefix cache anyway."
    )
    metadata: dict[str, Any] | None = ignored("it stores no completions")
    store: bool | None = ignored("it stores no completions")
    num_ctx: Any = ignored("the context length is the server's (max_model_len)")
    repeat_penalty: Any = ignored("Ollama's name; this server's is repetition_penalty")

    def asked_max_tokens(self) -> tuple[str, int | None]:
        """The reply-length parameter the request set, and its value."""
        return "max_tokens", self.max_tokens

    def ignored_fields(self) -> list[str]:
        """Fields that ask for something this server does not do: unknown ones, and those marked
        :func:`ignored` set to a value other than null, false or empty."""
        marked = [
            name
            for name, info in type(self).model_fields.items()
            if isinstance(info.json_schema_extra, dict)
            and IGNORED in info.json_schema_extra
            and getattr(self, name) not in (None, False, "", [], {})
        ]
        return marked + list(self.model_extra or {})


class ResponseFormatJSONObject(OpenAIModel):
    type: Literal["json_object"]


class JSONSchemaFormat(OpenAIModel):
    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatJSONSchema(OpenAIModel):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema


class ChatCompletionRequest(SamplingFields):
    """OpenAI's chat request, as far as this server honours it.

    A parameter the server cannot honour is refused by name (a 400) unless its value asks for
    nothing (``"tools": []``, ``"modalities": ["text"]``); fields other servers invented are ignored.
    """

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = Field(default=None, description="Return each reply token's log probability.")
    top_logprobs: int | None = Field(
        default=None, ge=0, le=20, description="With logprobs, the likeliest tokens at each position (0-20)."
    )
    response_format: ResponseFormat | None = Field(
        default=None, description="'json_object' or 'json_schema': the reply follows it (vLLM's structured outputs)."
    )
    parallel_tool_calls: bool | None = ignored("there are no tools to call")
    reasoning_effort: str | None = ignored("the models do not reason before answering")
    reasoning: Any = ignored("the models do not reason before answering")

    tools: list[dict[str, Any]] | None = unsupported("personas do not call tools", max_length=0)
    tool_choice: Literal["none", "auto"] | None = unsupported("personas do not call tools")
    functions: list[dict[str, Any]] | None = unsupported("personas do not call functions", max_length=0)
    function_call: Literal["none", "auto"] | None = unsupported("personas do not call functions")
    audio: None = unsupported("replies are text only")
    modalities: list[Literal["text"]] | None = unsupported("replies are text only")
    prediction: None = unsupported("it has no predicted outputs")
    verbosity: None = unsupported("it has no verbosity control")
    web_search_options: None = unsupported("it does not search the web")
    service_tier: Literal["auto", "default"] | None = unsupported("it has one service tier")

    def asked_max_tokens(self) -> tuple[str, int | None]:
        if self.max_completion_tokens:
            return "max_completion_tokens", self.max_completion_tokens
        return "max_tokens", self.max_tokens

    def top_logprobs_asked(self) -> int | None:
        """How many likeliest tokens to return per position; None: no log probabilities
        (``top_logprobs`` alone asks for them too)."""
        if self.logprobs or self.top_logprobs:
            return self.top_logprobs or 0
        return None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    """OpenAI's ``choices[].logprobs``: one entry per reply token."""

    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


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
    logprobs: ChoiceLogprobs | None = None


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
