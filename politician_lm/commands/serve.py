"""``politician-lm serve``: check everything that needs no weights, start uvicorn, load the model in the background."""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys

from politician_lm.errors import UserError

REGISTRY = "configs/models.yaml"
API_KEY_ENV = "POLITICIAN_LM_API_KEY"


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            why = "is already in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
            raise UserError(f"{host}:{port} {why}; pick another --port or --host") from None


def serve(
    personas: list[str] | str | None = None,
    registry: str = REGISTRY,
    adapters: list[str] | str | None = None,
    base_model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch_size: int = 8,
    batch_wait_ms: float = 10.0,
    max_pending: int = 64,
    max_tokens: int = 512,
    max_prompt_tokens: int = 2048,
    max_body_bytes: int = 1 << 20,
    api_key_env: str = API_KEY_ENV,
    quantization: str | None = None,
    allow_pickle: bool = False,
    log_level: str = "info",
) -> None:
    """Serve personas behind an OpenAI-compatible endpoint (/v1/chat/completions, /v1/models) and a chat page at /.

    Args:
        personas: Registry names to serve, as ``biden,trump`` or a list (default: every registry persona whose
            adapter folders exist; they must share one base model).
        registry: Model registry YAML mapping persona names to base model, adapters with weights, generation settings.
        adapters: Serve these adapter folders instead of the registry, as ``NAME=PATH`` (or ``PATH``: named by its
            politician), comma-separated or a list.
        base_model: Base model folder for every persona (default: the registry's, else the adapters' own).
        host: Address to bind; 127.0.0.1 answers only this machine. Use 0.0.0.0 to listen on every interface.
        port: TCP port.
        max_batch_size: Most requests decoded together, one token each per step, whatever their persona and
            sampling settings; a request beyond them queues and joins at the step after a row ends.
        batch_wait_ms: When nothing is generating, how long the first request waits for others (less once
            max_batch_size are queued) so that requests sent together start together; a request that arrives
            while others generate joins the batch at the next step without waiting.
        max_pending: Request slots (queued + generating); a request beyond them gets 429.
        max_tokens: Cap on a request's max_tokens (longer requests are cut there, finish_reason "length").
        max_prompt_tokens: Longest prompt in tokens, as rendered with the persona system prompt (400 beyond it).
        max_body_bytes: Largest request body (413 beyond it).
        api_key_env: Environment variable holding the API key; when it is set, /v1/* needs
            ``Authorization: Bearer KEY``. The key is never logged.
        quantization: Base weights: nf4, fp4, int8 or none (default: as the adapters were trained).
        allow_pickle: Accept pickle (.bin) weights, which can run code when loaded.
        log_level: debug, info, warning or error.
    """
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"serve needs {' and '.join(missing)}: pip install -e '.[serve]'")
    for name, value in (
        ("max_batch_size", max_batch_size),
        ("max_pending", max_pending),
        ("max_tokens", max_tokens),
        ("max_prompt_tokens", max_prompt_tokens),
        ("max_body_bytes", max_body_bytes),
    ):
        if value < 1:
            raise UserError(f"--{name} must be at least 1 (got {value})")
    if batch_wait_ms < 0:
        raise UserError(f"--batch_wait_ms must be >= 0 (got {batch_wait_ms})")
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise UserError(f"--log_level {log_level!r}: use debug, info, warning or error")
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a TCP port (0-65535)")
    from politician_lm.serve.personas import resolve_specs

    specs = resolve_specs(personas, registry, adapters, base_model, allow_pickle)
    _check_port(host, port)
    api_key = os.environ.get(api_key_env) or None

    import uvicorn

    from politician_lm.serve.api import Limits, ServerState, create_app

    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    def load():
        from politician_lm.serve.engine import Engine, load_served

        return Engine(load_served(specs, quantization, allow_pickle), max_batch_size, batch_wait_ms / 1000, max_pending)

    state = ServerState(load=load, limits=Limits(max_tokens, max_prompt_tokens, max_body_bytes), api_key=api_key)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(state),
            host=host,
            port=port,
            log_config=None,
            log_level=log_level.lower(),
            timeout_graceful_shutdown=5,
        )
    )
    state.on_fatal = lambda: setattr(server, "should_exit", True)
    log = logging.getLogger("politician_lm.serve")
    log.info(
        "serving %s on http://%s:%d (one base: %s; API key %s); loading...",
        ", ".join(s.name for s in specs),
        host,
        port,
        specs[0].base_model,
        f"required (from ${api_key_env})" if api_key else "not required",
    )
    server.run()
    if state.error:
        raise UserError(f"loading the personas failed: {state.error}")
