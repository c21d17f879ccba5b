"""The HTTP side: OpenAI-compatible chat completions (plain and server-sent events), models, health, the chat page.

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, and a one-line message.

System-message policy: the persona's own system prompt (the one it was trained with, from ``politician_lm.json``)
always comes first and cannot be replaced; a client's system (or developer) messages are accepted, joined, and
appended to it after a blank line. A persona trained without a system prompt gets the client's text as its system
turn (``chat`` format) or first line (``plain`` format). User turns get the ``USER:`` label and earlier answers the
``POLITICIAN:`` label in the plain format, as in training; the answer is returned without its label.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from politician_lm.artifacts.roles import assistant_turn, may_become_reply_label, strip_reply_label, user_turn

log = logging.getLogger("politician_lm.serve")
PAGE = Path(__file__).with_name("chat.html")


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat completion request that change the answer; others (``seed``, ``stop``,
    penalties, ``user``...) are accepted and ignored. ``min_tokens`` is an extension (as in vLLM)."""

    model_config = ConfigDict(strict=True, extra="ignore")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    min_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = 1


@dataclass
class Limits:
    max_tokens: int = 512
    max_prompt_tokens: int = 2048
    max_body_bytes: int = 1 << 20


@dataclass
class ServerState:
    """What the app serves; ``engine`` is set by ``load`` (in a thread) once the model is in memory."""

    load: Callable[[], Any]
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    on_fatal: Callable[[], None] = lambda: None
    engine: Any = None
    error: str | None = None


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            " ".join(message.split()),
            type_,
            param,
            code,
        )

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


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


class ReplyText:
    """Token ids -> the answer text, incrementally: held back while it could still be a ``POLITICIAN:`` label or ends
    in an incomplete character, so the streamed pieces add up to exactly the non-streamed answer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.ids, self.sent, self.labelled = tokenizer, [], "", False

    def visible(self, final: bool) -> str | None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not final:
            if text.endswith("\ufffd"):
                return None
            if not self.labelled:
                if may_become_reply_label(text):
                    return None
                self.labelled = True
        return strip_reply_label(text)

    def push(self, token: int | None, final: bool = False) -> str:
        if token is not None:
            self.ids.append(token)
        text = self.visible(final)
        if text is None or not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent) :], text
        return delta


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{where}: {err['msg']}{more}"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def create_app(state: ServerState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()

        def load() -> None:
            try:
                state.engine = state.load()
                log.info("ready: %s", ", ".join(state.engine.personas))
            except BaseException as e:  # noqa: BLE001 - reported, then the server stops
                state.error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                log.error("loading failed: %s", state.error)
                loop.call_soon_threadsafe(state.on_fatal)

        loop.run_in_executor(None, load)
        yield
        if state.engine is not None:
            state.engine.close()

    app = FastAPI(title="politician-lm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError) -> JSONResponse:
        return e.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return APIError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        return APIError(400, f"invalid request: {e.errors()[0].get('msg')}").response()

    def authorize(request: Request) -> None:
        if state.api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), state.api_key.encode()):
            raise APIError(
                401, "invalid or missing API key; send it as 'Authorization: Bearer KEY'", code="invalid_api_key"
            )

    def engine() -> Any:
        if state.engine is None:
            raise APIError(
                503, "the model is still loading; retry when /ready answers 200", "server_error", code="model_loading"
            )
        return state.engine

    @app.get("/health")
    async def health() -> dict:
        """Liveness: the process answers. Also the engine's counters and the process's peak memory."""
        body: dict[str, Any] = {"status": "ok", "ready": state.engine is not None, "peak_rss_mb": _peak_rss_mb()}
        if state.engine is not None:
            body["engine"] = state.engine.snapshot()
        return body

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Readiness: 200 once every persona is loaded, 503 while loading (or after loading failed)."""
        if state.engine is None:
            return JSONResponse({"status": "failed" if state.error else "loading", "error": state.error}, 503)
        return JSONResponse({"status": "ready", "personas": list(state.engine.personas)})

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        authorize(request)
        data = []
        for name, served in engine().personas.items():
            spec = served.spec
            data.append(
                {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "politician-lm",
                    "politician": served.persona.style.politician,
                    "adapters": [{"path": p, "weight": w} for p, w in zip(spec.adapters, spec.weights)],
                }
            )
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        limits = state.limits
        if int(request.headers.get("content-length") or 0) > limits.max_body_bytes:
            raise APIError(413, f"request body over {limits.max_body_bytes} bytes")
        raw = await request.body()
        if len(raw) > limits.max_body_bytes:
            raise APIError(413, f"request body over {limits.max_body_bytes} bytes")
        try:
            body = json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as e:
            raise APIError(400, f"malformed JSON: {str(e).splitlines()[0][:120]}") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        try:
            req = ChatRequest.model_validate(body)
        except ValidationError as e:
            raise APIError(
                400, f"invalid request: {_first_error(e)}", param=".".join(map(str, e.errors()[0]["loc"]))
            ) from None
        if req.n != 1:
            raise APIError(400, "n: only n=1 is supported", param="n")
        eng = engine()
        served = eng.personas.get(req.model)
        if served is None:
            raise APIError(
                404,
                f"the model {req.model!r} does not exist; known personas: {', '.join(eng.personas)}",
                param="model",
                code="model_not_found",
            )
        front = served.front
        conv = conversation(req.messages, front.style.system_prompt, front.style.prompt_format)
        prompt_tokens = len(front.prompt_ids(conv))
        room = min(limits.max_prompt_tokens, front.context_window - 1)
        if prompt_tokens > room:
            raise APIError(
                400,
                f"the prompt is {prompt_tokens} tokens; at most {room} are accepted",
                param="messages",
                code="context_length_exceeded",
            )
        wanted = req.max_completion_tokens or req.max_tokens or served.persona.generation.get("max_new_tokens") or 128
        max_new = max(1, min(wanted, limits.max_tokens, front.context_window - prompt_tokens))
        settings = _settings(served.persona.generation, req)

        from politician_lm.serve.engine import Job

        job = Job(req.model, conv, max_new, settings, asyncio.get_running_loop())
        if not eng.submit(job):
            raise APIError(
                429,
                f"all {eng.max_pending} request slots are busy; retry shortly",
                "rate_limit_error",
                code="server_busy",
            )
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                _sse(eng, job, front.tokenizer, ident, created, prompt_tokens, usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _complete(request, eng, job, front.tokenizer, ident, created, prompt_tokens)

    return app


def _settings(defaults: dict[str, Any], req: ChatRequest) -> dict[str, Any]:
    """The persona's generation settings (adapter, then registry) with the request's overrides; temperature 0 is
    greedy. ``max_new_tokens`` is per row, so it is not part of the batch settings."""
    s = {k: v for k, v in defaults.items() if k != "max_new_tokens"}
    if req.temperature is not None:
        s["do_sample"] = req.temperature > 0
        if req.temperature > 0:
            s["temperature"] = req.temperature
    if req.top_p is not None:
        s["top_p"] = req.top_p
    if req.min_tokens:
        s["min_new_tokens"] = req.min_tokens
    if not s.get("do_sample"):
        s = {k: v for k, v in s.items() if k not in ("temperature", "top_p", "top_k")}
    return s


def _usage(prompt_tokens: int, job: Any) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(job.tokens),
        "total_tokens": prompt_tokens + len(job.tokens),
    }


async def _complete(
    request: Request, eng: Any, job: Any, tokenizer: Any, ident: str, created: int, prompt_tokens: int
) -> JSONResponse:
    """Wait for the whole answer; a client that disconnects meanwhile cancels its job (its slot frees at once)."""

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
            eng.cancel(job)
    if not done.done() or done.cancelled():
        return JSONResponse({}, status_code=499)  # nobody reads it
    if job.finish_reason == "error":
        raise APIError(500, f"generation failed: {job.error}", "server_error")
    text = ReplyText(tokenizer)
    text.ids = list(job.tokens)
    content = text.push(None, final=True)
    return JSONResponse(
        {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": job.persona,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop" if job.finish_reason == "stop" else "length",
                    "logprobs": None,
                }
            ],
            "usage": _usage(prompt_tokens, job),
        }
    )


async def _sse(eng: Any, job: Any, tokenizer: Any, ident: str, created: int, prompt_tokens: int, usage: bool):
    """Server-sent events in OpenAI's chunk format; a client gone mid-stream cancels the job."""

    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": job.persona,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    text = ReplyText(tokenizer)
    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            kind, value = await job.events.get()
            if kind == "token":
                if delta := text.push(value):
                    yield chunk({"content": delta})
                continue
            if job.finish_reason == "error":
                err = {
                    "message": f"generation failed: {job.error}",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
                yield f"data: {json.dumps({'error': err})}\n\n"
                break
            if delta := text.push(None, final=True):
                yield chunk({"content": delta})
            yield chunk({}, "stop" if job.finish_reason == "stop" else "length")
            if usage:
                body = {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": job.persona,
                    "choices": [],
                    "usage": _usage(prompt_tokens, job),
                }
                yield f"data: {json.dumps(body)}\n\n"
            yield "data: [DONE]\n\n"
            break
    finally:  # normal end, or the client went away (the generator is closed or cancelled)
        if job.finish_reason is None:
            with suppress(Exception):
                eng.cancel(job)


def _peak_rss_mb() -> float | None:
    """The process's peak resident memory (VmHWM), in MB; None where /proc is not available."""
    with suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None
