"""A job's tokens as an answer: whole (one JSON body) or streamed (server-sent events), and the job cancelled when
its client goes away, so its request slot frees at once instead of after ``max_tokens``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from politician_lm.serve.engine import Engine, Job
from politician_lm.serve.protocol import (
    APIError,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    ErrorBody,
    ErrorResponse,
    Usage,
)
from politician_lm.serve.text import ReplyText

__all__ = ["Answer", "ReplyText", "complete", "sse_event", "stream"]


class Answer:
    """What every response to one job shares: its id, creation time and prompt length, and the job itself."""

    def __init__(self, engine: Engine, job: Job, tokenizer: Any, ident: str, created: int, prompt_tokens: int) -> None:
        self.engine, self.job, self.tokenizer = engine, job, tokenizer
        self.ident, self.created, self.prompt_tokens = ident, created, prompt_tokens

    @property
    def finish_reason(self) -> str:
        """OpenAI's reason: ``stop`` at end of turn or a stop string, ``length`` for any cap (the request's or the
        context's)."""
        return "stop" if self.job.finish_reason == "stop" else "length"

    @property
    def usage(self) -> Usage:
        return Usage.of(self.prompt_tokens, len(self.job.tokens))

    def chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.ident, created=self.created, model=self.job.persona, choices=choices, usage=usage
        )

    def whole(self) -> ChatCompletion:
        text = ReplyText(self.tokenizer, self.job.stop)
        text.ids = list(self.job.tokens)
        message = AssistantMessage(content=text.push(None, final=True))
        return ChatCompletion(
            id=self.ident,
            created=self.created,
            model=self.job.persona,
            choices=[Choice(message=message, finish_reason=self.finish_reason)],
            usage=self.usage,
        )


def sse_event(body: BaseModel) -> str:
    """The one writer of a server-sent event: ``data: <json>`` and a blank line (json.dumps' spacing, UTF-8)."""
    return f"data: {json.dumps(body.model_dump(), ensure_ascii=False)}\n\n"


async def stream(answer: Answer, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format; a client gone mid-stream cancels the job."""
    job = answer.job
    text = ReplyText(answer.tokenizer, job.stop)

    def piece(delta: Delta, finish: str | None = None) -> str:
        return sse_event(answer.chunk([ChunkChoice(delta=delta, finish_reason=finish)]))

    try:
        yield piece(Delta(role="assistant", content=""))
        while True:
            kind, value = await job.events.get()
            if kind == "token":
                if content := text.push(value):
                    yield piece(Delta(content=content))
                continue
            if job.finish_reason == "error":
                failed = ErrorBody(message=f"generation failed: {job.error}", type="server_error")
                yield sse_event(ErrorResponse(error=failed))
                break
            if content := text.push(None, final=True):
                yield piece(Delta(content=content))
            yield piece(Delta(), answer.finish_reason)
            if include_usage:
                yield sse_event(answer.chunk([], answer.usage))
            yield "data: [DONE]\n\n"
            break
    finally:  # normal end, or the client went away (the generator is closed or cancelled)
        if job.finish_reason is None:
            with suppress(Exception):
                answer.engine.cancel(job)


async def complete(request: Request, answer: Answer) -> JSONResponse:
    """Wait for the whole answer; a client that disconnects meanwhile cancels its job (its slot frees at once)."""
    job = answer.job

    async def finished() -> None:
        while (await job.events.get())[0] != "done":
            pass

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    done, watch = asyncio.ensure_future(finished()), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({done, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not done.done():
            done.cancel()
            answer.engine.cancel(job)
    if not done.done() or done.cancelled():
        return JSONResponse({}, status_code=499)  # nobody reads it
    if job.finish_reason == "error":
        raise APIError(500, f"generation failed: {job.error}", "server_error")
    return JSONResponse(answer.whole().model_dump())
