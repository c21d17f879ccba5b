"""The HTTP side: the FastAPI app that serves the routes, loads the personas in the background, and answers every
error in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with a one-line message.

* ``protocol.py``: the OpenAI wire shapes (request, completion, chunk, model list, error) and the system-message
  policy;
* ``routes.py``: the routes, the server's state and limits, the API key check;
* ``admin.py``: personas loaded and unloaded at run time (``/v1/load_lora_adapter``, ``/v1/unload_lora_adapter``);
* ``streaming.py``: a job's tokens as one answer or as server-sent events, cancelled when the client goes away.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from politician_lm.serve import admin
from politician_lm.serve.protocol import APIError, ChatRequest, Message, conversation
from politician_lm.serve.routes import Limits, ServerState, router
from politician_lm.serve.streaming import ReplyText

__all__ = ["APIError", "ChatRequest", "Limits", "Message", "ReplyText", "ServerState", "conversation", "create_app"]

log = logging.getLogger("politician_lm.serve")


def create_app(state: ServerState) -> FastAPI:
    """The app for ``state``; its lifespan loads the engine in a thread, so ``/health`` answers at once.

    The loading thread is one of its own that ends when loading does, not a pooled executor thread that lives on.
    Loading runs torch's parallel operations, and GNU OpenMP (PyTorch's on Linux) keeps a pool of worker threads for
    every thread that has run one. While a second pool lives beside the engine thread's, the process has more OpenMP
    threads than cores (on 2 cores), and libgomp then stops spinning between parallel regions and puts its workers
    to sleep after each: a 32-row decoding step on two threads took longer than on one (166 against 130 ms under
    the load test). With the loader's pool gone when it ends, the engine's two threads run as they do alone."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def load() -> None:
            try:
                state.engine = state.load()
                log.info("ready: %s", ", ".join(state.engine.personas))
            except BaseException as e:  # noqa: BLE001 - reported, then the server stops
                state.error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                log.error("loading failed: %s", state.error)
                loop.call_soon_threadsafe(state.on_fatal)

        threading.Thread(target=load, name="politician-lm-load", daemon=True).start()
        yield
        if state.engine is not None:
            state.engine.close()

    app = FastAPI(title="politician-lm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state  # what routes.server_state hands each route
    app.include_router(router)
    app.include_router(admin.router)
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    return app


async def _api_error(request: Request, e: APIError) -> JSONResponse:
    return e.response()


async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (an unknown route, a wrong method) in OpenAI's shape."""
    return APIError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None).response()


async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
    return APIError(400, f"invalid request: {e.errors()[0].get('msg')}").response()
