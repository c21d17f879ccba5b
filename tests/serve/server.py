"""Helpers the HTTP tests of serve share: a real `politician-lm serve` subprocess, a free port, the `generate`
reference answer, where Chromium is and how the browser tests launch it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from politician_lm.artifacts.roles import strip_reply_label
from politician_lm.cli import main
from tests.helpers import ROOT

BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`politician-lm serve` in a subprocess; its log is kept for inspection."""

    def __init__(self, tmp: Path, *args: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"server-{self.port}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "politician_lm.cli", "serve", "--port", str(self.port), *args],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            try:
                if httpx.get(self.url + "/ready", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError("server not ready in 180 s:\n" + self.log_path.read_text()[-3000:])

    def stats(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()["engine"]

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        return self.log_path.read_text()


def serving(tmp: Path, registry: Path, *args: str, api_key: str | None = None, unlogged=()) -> Iterator[Server]:
    """A module fixture's server (``yield from``): `politician-lm serve --registry REGISTRY ARGS...`, with ``api_key``
    as its API key when given; stopped after the module, its log then holding neither the key nor ``unlogged``."""
    server = Server(
        tmp, "--registry", str(registry), *args, env={"POLITICIAN_LM_API_KEY": api_key} if api_key else None
    )
    yield server
    log = server.stop()
    assert not [s for s in (api_key, *unlogged) if s and s in log], "a secret is in the server's log"


def reference(
    registry: Path,
    persona: str,
    prompt: str | None = None,
    messages: list | None = None,
    tmp: Path | None = None,
    max_new_tokens: int = 24,
) -> str:
    """`politician-lm generate --do_sample false` for one prompt, alone (batch of one), label stripped."""
    out = tmp / f"ref-{persona}-{abs(hash((prompt, json.dumps(messages))))}.jsonl"
    args = ["--prompt", prompt] if prompt is not None else []
    if messages is not None:
        rows = tmp / (out.name + ".in")
        rows.write_text(json.dumps({"messages": messages}) + "\n")
        args = ["--prompts_file", str(rows)]
    main(
        [
            "generate",
            "--politician",
            persona,
            "--registry",
            str(registry),
            *args,
            "--do_sample",
            "false",
            "--max_new_tokens",
            str(max_new_tokens),
            "--batch_size",
            "1",
            "--output",
            str(out),
            "--overwrite",
            "true",
        ]
    )
    return strip_reply_label(json.loads(out.read_text())["generation"])


def as_generate_prompt(persona: str, question: str) -> str:
    return question if persona == "gamma" else f"USER: {question}"  # plain-format personas were trained with labels


def chromium() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
