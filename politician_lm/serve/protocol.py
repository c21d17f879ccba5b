"""The OpenAI wire shapes the server reads and writes, as pydantic models, and the one error it raises.

Each response model's ``model_dump()`` is exactly the JSON on the wire: keys in OpenAI's order, the nulls OpenAI
sends (``logprobs``, a chunk's ``finish_reason``, an error's ``param`` and ``code``) kept, and the fields OpenAI
leaves out when unused (a delta's ``role``, a chunk's ``usage``) left out rather than sent as null.

System-message policy (``conversation``): the persona's own system prompt (the one it was trained with, from
``politician_lm.json``) always comes first and cannot be replaced; a client's system (or developer) messages are
accepted, joined, and appended to it after a blank line. A persona trained without a system prompt gets the
client's text as its system turn (``chat`` format) or first line (``plain`` format). User turns get the ``USER:``
label and earlier answers the ``POLITICIAN:`` label in the plain format, as in training; the answer is returned
without its label.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from politician_lm.artifacts.roles import assistant_turn, user_turn

FinishReason = Literal["stop", "length"]
StopText = Annotated[str, Field(min_length=1, max_length=256)]


def _absent_when_none(value: object) -> bool:
    return value is None


# -- the request ------------------------------------------------------------------------------------------------------
class _Strict(BaseModel):
    """Request parts: no type coercion (``"ten"`` is not a number), unknown OpenAI fields accepted and ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(_Strict):
    """The fields of OpenAI's chat completion request that change the answer; fields that would change it in ways
    this server does not support are refused (``unsupported``), the rest (``user``, ``metadata``...) are ignored.
    ``min_tokens`` is an extension (as in vLLM)."""

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    min_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: StopText | Annotated[list[StopText], Field(max_length=16)] | None = None
    n: int | None = 1  # null is OpenAI's default too: one choice

    @property
    def wants_usage_chunk(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


def _off(value: object) -> bool:
    return value in (None, 0, False, "", [], {})


# field -> (is it left at a value that changes nothing?, what to do instead)
UNSUPPORTED = {
    "n": (lambda v: v in (None, 1), "only n=1 is supported"),
    "presence_penalty": (_off, "not supported by this server; leave it out or at 0"),
    "frequency_penalty": (_off, "not supported by this server; leave it out or at 0"),
    "logit_bias": (_off, "not supported by this server; leave it out"),
    "logprobs": (_off, "not supported by this server; leave it out or false"),
    "top_logprobs": (_off, "not supported by this server; leave it out"),
    "best_of": (lambda v: v in (None, 1), "not supported by this server; leave it out"),
    "tools": (_off, "tools are not supported by this server"),
    "functions": (_off, "functions are not supported by this server"),
    "tool_choice": (lambda v: v in (None, "none", "auto"), "tools are not supported by this server"),
    "response_format": (lambda v: _off(v) or v == {"type": "text"}, "only text answers are supported"),
    "audio": (_off, "only text answers are supported"),
    "modalities": (lambda v: _off(v) or v == ["text"], "only text answers are supported"),
    "prediction": (_off, "not supported by this server; leave it out"),
}


def unsupported(body: dict) -> APIError | None:
    """The 400 for the first field set to something this server cannot do (a silent ignore would be wrong)."""
    for name, (harmless, why) in UNSUPPORTED.items():
        if name in body and not harmless(body[name]):
            return APIError(400, f"{name}: {why}", param=name, code="unsupported_parameter")
    return None


class LoadAdapterRequest(_Strict):
    """``POST /v1/load_lora_adapter``, as vLLM names it: a persona from an adapter folder, or the registry's entry
    of that name when ``lora_path`` is left out."""

    lora_name: str
    lora_path: str | None = None


class UnloadAdapterRequest(_Strict):
    lora_name: str


# -- responses --------------------------------------------------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    """A streamed piece: the first chunk names the role, the last one is empty (``{}``)."""

    role: Literal["assistant"] | None = Field(default=None, exclude_if=_absent_when_none)
    content: str | None = Field(default=None, exclude_if=_absent_when_none)


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event; the optional last one has no choices and carries ``usage``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = Field(default=None, exclude_if=_absent_when_none)


class AdapterCard(BaseModel):
    path: str
    weight: float


class ModelCard(BaseModel):
    """A persona as an OpenAI model, with what it is made of: as vLLM lists a LoRA adapter, ``parent`` is the base
    model and ``root`` the adapter folder (the base, for a persona folded from several adapters)."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "politician-lm"
    root: str
    parent: str | None
    politician: str | None
    adapters: list[AdapterCard]


class DeletedModel(BaseModel):
    """The answer to an unload, as OpenAI answers a deleted model."""

    id: str
    object: Literal["model"] = "model"
    deleted: bool = True


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class APIError(Exception):
    """A request the server answers with OpenAI's error shape, ``{"error": {"message", "type", "param",
    "code"}}``, and a one-line message (whitespace, newlines included, collapsed)."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(message=" ".join(message.split()), type=type_, param=param, code=code)

    @property
    def message(self) -> str:
        return self.body.message

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(ErrorResponse(error=self.body).model_dump(), status_code=self.status, headers=headers)


def conversation(messages: list[Message], system_prompt: str | None, prompt_format: str) -> list[dict[str, str]]:
    """The request's messages as the persona was trained to read them (see the module docstring)."""
    client_system = "\n\n".join(m.text for m in messages if m.role in ("system", "developer") and m.text.strip())
    turns = [m for m in messages if m.role not in ("system", "developer")]
    if not turns or turns[-1].role != "user":
        raise APIError(400, "messages must end with a user message", param="messages")
    out = [
        user_turn(m.text, prompt_format) if m.role == "user" else assistant_turn(m.text, prompt_format) for m in turns
    ]
    if client_system:
        system = f"{system_prompt}\n\n{client_system}" if system_prompt else client_system
        out.insert(0, {"role": "system", "content": system})
    return out
