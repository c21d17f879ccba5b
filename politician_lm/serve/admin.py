"""Personas added and removed while the server runs, with vLLM's endpoint names and bodies:

* ``POST /v1/load_lora_adapter`` ``{"lora_name": NAME, "lora_path": FOLDER}`` serves the adapter folder as persona
  NAME; without ``lora_path``, NAME is read from the registry the server started with (a weighted mix is folded
  into one adapter, as at start). Checked as at start: a folder of another base, or one whose tensors do not fit
  this base, is a one-line 400. Answers the new persona's ``/v1/models`` card.
* ``POST /v1/unload_lora_adapter`` ``{"lora_name": NAME}``: NAME takes no new requests from now on; its requests
  already queued or streaming finish as they began, and its adapter leaves the model after the last of them.

Both need the API key when the server has one (as every ``/v1`` route). The model is changed only on the engine's
thread between two decoding steps, so the streams of other personas go on untouched.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from politician_lm.errors import UserError
from politician_lm.serve.personas import resolve_one
from politician_lm.serve.protocol import APIError, DeletedModel, LoadAdapterRequest, UnloadAdapterRequest
from politician_lm.serve.routes import AuthorizedState, json_body, model_card, unknown_model, validated

router = APIRouter()
log = logging.getLogger("politician_lm.serve")


def _user_error(e: UserError) -> APIError:
    return APIError(400, str(e).strip().splitlines()[0] if str(e).strip() else "invalid adapter", param="lora_path")


@router.post("/v1/load_lora_adapter")
async def load_lora_adapter(request: Request, state: AuthorizedState) -> JSONResponse:
    req = validated(LoadAdapterRequest, await json_body(request, state))
    eng = state.ready_engine()
    if req.lora_name in eng.personas:
        raise APIError(400, f"persona {req.lora_name!r} is already loaded; unload it first", param="lora_name")
    try:
        spec = await run_in_threadpool(resolve_one, req.lora_name, req.lora_path, eng.served.registry)
        served = await asyncio.wrap_future(eng.add_persona(spec))
    except UserError as e:
        raise _user_error(e) from None
    log.info("loaded %s (%s)", spec.name, ", ".join(f"{p} x{w:g}" for p, w in zip(spec.adapters, spec.weights)))
    return JSONResponse(model_card(spec.name, served, eng.served.base_model).model_dump())


@router.post("/v1/unload_lora_adapter")
async def unload_lora_adapter(request: Request, state: AuthorizedState) -> JSONResponse:
    req = validated(UnloadAdapterRequest, await json_body(request, state))
    eng = state.ready_engine()
    try:
        eng.remove_persona(req.lora_name)
    except KeyError:
        raise unknown_model(req.lora_name, eng) from None
    except UserError as e:
        raise APIError(400, str(e), param="lora_name") from None
    return JSONResponse(DeletedModel(id=req.lora_name).model_dump())
