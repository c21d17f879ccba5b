"""The routes: ``/v1/chat/completions``, ``/v1/models``, ``/health``, ``/ready`` and the chat page.

Each route reaches the server's state through the ``server_state`` dependency (the ``ServerState`` that
``create_app`` puts on ``app.state``), so the routes are plain module functions that a test can read one by one.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from politician_lm.serve.engine import Engine, Job, ServedPersona
from politician_lm.serve.protocol import (
    AdapterCard,
    APIError,
    ChatRequest,
    ModelCard,
    ModelList,
    conversation,
    unsupported,
)
from politician_lm.serve.streaming import Answer, complete, stream

PAGE = Path(__file__).with_name("chat.html")
M = TypeVar("M", bound=BaseModel)


@dataclass
class Limits:
    max_tokens: int = 512
    max_prompt_tokens: int = 2048
    max_body_bytes: int = 1 << 20


@dataclass
class ServerState:
    """What the app serves; ``engine`` is set by ``load`` (in a thread) once the model is in memory."""

    load: Callable[[], Engine]
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    on_fatal: Callable[[], None] = lambda: None
    engine: Engine | None = None
    error: str | None = None

    def ready_engine(self) -> Engine:
        """The engine, or 503 while the personas are still loading."""
        if self.engine is None:
            raise APIError(
                503, "the model is still loading; retry when /ready answers 200", "server_error", code="model_loading"
            )
        return self.engine


def server_state(request: Request) -> ServerState:
    return request.app.state.server


State = Annotated[ServerState, Depends(server_state)]


def authorized(request: Request, state: State) -> ServerState:
    """The state, once the request carries the API key (when one is set); compared in constant time."""
    if state.api_key is None:
        return state
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), state.api_key.encode()):
        raise APIError(
            401, "invalid or missing API key; send it as 'Authorization: Bearer KEY'", code="invalid_api_key"
        )
    return state


AuthorizedState = Annotated[ServerState, Depends(authorized)]


router = APIRouter()


@router.get("/health")
async def health(state: State) -> dict:
    """Liveness: the process answers. Also the engine's counters and the process's peak memory."""
    body: dict[str, Any] = {"status": "ok", "ready": state.engine is not None, "peak_rss_mb": _peak_rss_mb()}
    if state.engine is not None:
        body["engine"] = state.engine.snapshot()
    return body


@router.get("/ready")
async def ready(state: State) -> JSONResponse:
    """Readiness: 200 once every persona is loaded, 503 while loading (or after loading failed)."""
    if state.engine is None:
        return JSONResponse({"status": "failed" if state.error else "loading", "error": state.error}, 503)
    return JSONResponse({"status": "ready", "personas": list(state.engine.personas)})


@router.get("/", response_class=HTMLResponse)
async def page() -> HTMLResponse:
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))


@router.get("/v1/models")
async def models(state: AuthorizedState) -> JSONResponse:
    eng = state.ready_engine()
    cards = [model_card(name, served, eng.served.base_model) for name, served in list(eng.personas.items())]
    return JSONResponse(ModelList(data=cards).model_dump())


async def json_body(request: Request, state: ServerState) -> dict:
    """The body as a JSON object: 413 over the size limit, 400 for bad JSON (NaN included) or a non-object."""
    limit = state.limits.max_body_bytes
    if int(request.headers.get("content-length") or 0) > limit:
        raise APIError(413, f"request body over {limit} bytes")
    raw = await request.body()
    if len(raw) > limit:
        raise APIError(413, f"request body over {limit} bytes")
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"malformed JSON: {str(e).splitlines()[0][:120]}") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    return body


def validated(model: type[M], body: dict) -> M:
    """``body`` as ``model``, or a 400 naming the first wrong field."""
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise APIError(
            400, f"invalid request: {_first_error(e)}", param=".".join(map(str, e.errors()[0]["loc"]))
        ) from None


async def chat_request(request: Request, state: AuthorizedState) -> ChatRequest:
    """The body as a ``ChatRequest``; a field set to something this server cannot do is a 400, not ignored."""
    body = await json_body(request, state)
    req = validated(ChatRequest, body)
    if (refused := unsupported(body)) is not None:
        raise refused
    return req


def model_card(name: str, served: ServedPersona, base: str) -> ModelCard:
    spec = served.spec
    return ModelCard(
        id=name,
        root=spec.adapters[0] if len(spec.adapters) == 1 else base,
        parent=base,
        politician=served.persona.style.politician,
        adapters=[AdapterCard(path=p, weight=w) for p, w in zip(spec.adapters, spec.weights)],
    )


def unknown_model(name: str, eng: Engine) -> APIError:
    return APIError(
        404,
        f"the model {name!r} does not exist; known personas: {', '.join(eng.personas)}",
        param="model",
        code="model_not_found",
    )


@router.post("/v1/chat/completions")
async def chat_completions(
    request: Request, req: Annotated[ChatRequest, Depends(chat_request)], state: AuthorizedState
) -> Response:
    """Check the prompt against the limits, queue it (429 when every slot is taken), answer whole or streamed."""
    eng = state.ready_engine()
    served = eng.personas.get(req.model)
    if served is None:
        raise unknown_model(req.model, eng)
    front, limits = served.front, state.limits
    conv = conversation(req.messages, front.style.system_prompt, front.style.prompt_format)
    prompt_ids = front.prompt_ids(conv)
    prompt_tokens = len(prompt_ids)
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
    job = Job(req.model, conv, max_new, settings, asyncio.get_running_loop(), req.seed, req.stops, prompt_ids)
    try:
        accepted = eng.submit(job)
    except KeyError:  # unloaded since it was looked up
        raise unknown_model(req.model, eng) from None
    if not accepted:
        raise APIError(
            429, f"all {eng.max_pending} request slots are busy; retry shortly", "rate_limit_error", code="server_busy"
        )
    answer = Answer(eng, job, front.tokenizer, f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), prompt_tokens)
    if req.stream:
        return StreamingResponse(
            stream(answer, req.wants_usage_chunk),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await complete(request, answer)


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


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{where}: {err['msg']}{more}"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _peak_rss_mb() -> float | None:
    """The process's peak resident memory (VmHWM), in MB; None where /proc is not available."""
    with suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None
