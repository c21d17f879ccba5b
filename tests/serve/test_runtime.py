"""serve at run time: personas loaded and unloaded through /v1/load_lora_adapter and /v1/unload_lora_adapter
(vLLM's names) without a restart, open streams untouched, the base checked, /v1/models and the chat page following
along. One real server (a subprocess) with an API key, started with one persona."""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import pytest

from tests.serve.server import BROWSER_ARGS, Server, chromium, reference, serving

pytestmark = pytest.mark.slow

QUESTION = "What is your view on topic number 3?"
SECRET = "sk-runtime-5e2d9a"
AUTH = {"Authorization": f"Bearer {SECRET}"}
LONG = 600  # tokens: a stream that stays open while adapters come and go


@pytest.fixture(scope="module")
def srv(registry, tmp_path_factory):
    yield from serving(
        tmp_path_factory.mktemp("runtime"), registry, "--personas", "alpha", "--max_tokens", str(LONG), api_key=SECRET
    )


def post(server: Server, path: str, body: dict, headers: dict | None = AUTH) -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers=headers, timeout=120)


def model_ids(server: Server) -> list[str]:
    return [m["id"] for m in httpx.get(server.url + "/v1/models", headers=AUTH, timeout=30).json()["data"]]


def ask(server: Server, persona: str, **extra) -> httpx.Response:
    body = {"model": persona, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0, "max_tokens": 24}
    return post(server, "/v1/chat/completions", {k: v for k, v in {**body, **extra}.items() if v is not None})


def answer(server: Server, persona: str, **extra) -> str:
    r = ask(server, persona, **extra)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


class OpenStream:
    """A long streamed answer read on a thread, so the test acts while it is open."""

    def __init__(self, server: Server, persona: str) -> None:
        self.body = {
            "model": persona,
            "messages": [{"role": "user", "content": QUESTION}],
            "temperature": 0,
            "max_tokens": LONG,
            "min_tokens": LONG,
            "stream": True,
        }
        self.pieces: list[str] = []
        self.finish: str | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(server,), daemon=True)
        self.thread.start()

    def _read(self, server: Server) -> None:
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=self.body, headers=AUTH, timeout=300) as r:
            for line in r.iter_lines():
                if not line.startswith("data: {"):
                    continue
                for choice in json.loads(line[len("data: ") :])["choices"]:
                    self.pieces.append(choice["delta"].get("content") or "")
                    self.finish = choice["finish_reason"] or self.finish
                    if self.pieces[-1]:
                        self.started.set()

    def text(self) -> str:
        self.thread.join(300)
        assert not self.thread.is_alive()
        return "".join(self.pieces)


def still_running(server: Server) -> None:
    assert server.stats()["running"] >= 1, f"the open stream ended too soon; raise LONG ({LONG})"


def test_a_persona_loaded_and_unloaded_while_a_stream_is_open_leaves_it_untouched(
    srv, registry, voices, tiny_path, tmp_path
):
    _, b = voices
    want_beta = reference(registry, "beta", f"USER: {QUESTION}", tmp=tmp_path)
    alone = OpenStream(srv, "alpha").text()
    assert ask(srv, "beta").status_code == 404
    stream = OpenStream(srv, "alpha")
    assert stream.started.wait(60)
    loaded = post(srv, "/v1/load_lora_adapter", {"lora_name": "beta", "lora_path": str(b)})
    assert loaded.status_code == 200, loaded.text
    card = loaded.json()
    assert card["id"] == "beta" and card["root"] == str(b) and card["parent"] == tiny_path
    assert card["adapters"] == [{"path": str(b), "weight": 1.0}]
    assert model_ids(srv) == ["alpha", "beta"]
    assert answer(srv, "beta") == want_beta  # the new persona answers as generate does
    unloaded = post(srv, "/v1/unload_lora_adapter", {"lora_name": "beta"})
    assert unloaded.status_code == 200 and unloaded.json() == {"id": "beta", "object": "model", "deleted": True}
    assert ask(srv, "beta").json()["error"]["code"] == "model_not_found" and model_ids(srv) == ["alpha"]
    still_running(srv)
    assert stream.text() == alone and stream.finish == "length"


def test_a_persona_unloaded_during_its_own_stream_finishes_that_stream_first(srv, voices):
    _, b = voices
    assert post(srv, "/v1/load_lora_adapter", {"lora_name": "beta", "lora_path": str(b)}).status_code == 200
    alone = OpenStream(srv, "beta").text()
    stream = OpenStream(srv, "beta")
    assert stream.started.wait(60)
    assert post(srv, "/v1/unload_lora_adapter", {"lora_name": "beta"}).status_code == 200
    assert ask(srv, "beta").status_code == 404  # no new requests at once ...
    still_running(srv)
    assert stream.text() == alone  # ... while the open one keeps its adapter to the end


def test_a_weighted_mix_loads_by_registry_name_as_one_folded_adapter(srv, registry, voices, tmp_path):
    a, b = voices
    want = reference(registry, "mix", f"USER: {QUESTION}", tmp=tmp_path)
    loaded = post(srv, "/v1/load_lora_adapter", {"lora_name": "mix"})
    assert loaded.status_code == 200, loaded.text
    card = loaded.json()
    assert card["adapters"] == [{"path": str(a), "weight": 0.7}, {"path": str(b), "weight": 0.6}]
    assert card["root"] == card["parent"]  # folded from two adapters: its root is the base
    assert answer(srv, "mix") == want
    assert post(srv, "/v1/unload_lora_adapter", {"lora_name": "mix"}).status_code == 200


def test_loading_errors_are_one_line_and_need_the_key(srv, voices, tmp_path):
    a, _ = voices
    other = tmp_path / "other-base"
    shutil.copytree(a, other)
    config = json.loads((other / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "someone/other-base-7b"
    (other / "adapter_config.json").write_text(json.dumps(config))
    meta = json.loads((other / "politician_lm.json").read_text())
    meta.update(base_model="someone/other-base-7b", base_model_path=None)
    (other / "politician_lm.json").write_text(json.dumps(meta))
    cases = [
        ("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(other)}, 400, "someone/other-base-7b"),
        ("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(tmp_path / "nope")}, 400, "does not exist"),
        ("/v1/load_lora_adapter", {"lora_name": "alpha", "lora_path": str(a)}, 400, "already loaded"),
        ("/v1/load_lora_adapter", {"lora_name": "a/b", "lora_path": str(a)}, 400, "persona name"),
        ("/v1/load_lora_adapter", {"lora_name": "nixon"}, 400, "no persona 'nixon'"),
        ("/v1/load_lora_adapter", {"lora_path": str(a)}, 400, "lora_name"),
        ("/v1/unload_lora_adapter", {"lora_name": "nixon"}, 404, "nixon"),
        ("/v1/unload_lora_adapter", {"lora_name": "alpha"}, 400, "only persona"),
    ]
    for path, body, status, needle in cases:
        r = post(srv, path, body)
        assert r.status_code == status, (body, r.text)
        message = r.json()["error"]["message"]
        assert needle in message and "\n" not in message, (body, message)
        assert post(srv, path, body, headers=None).status_code == 401
    assert model_ids(srv) == ["alpha"]
    assert answer(srv, "alpha")  # the failed loads left the model serving


def test_the_chat_page_picks_a_persona_loaded_at_run_time(srv, voices):
    exe = chromium()
    if exe is None:
        pytest.skip("needs Chromium (apt-get install -y chromium); CI installs it and requires this test")
    from playwright.sync_api import sync_playwright

    _, b = voices
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.goto(srv.url + "/")
            page.fill("#apikey", SECRET)
            page.focus("#message")  # leaving the key's field sends its change: the page asks for the personas again
            page.wait_for_function(
                "[...document.querySelectorAll('#persona option')].map(o => o.value).join() === 'alpha'"
            )
            assert post(srv, "/v1/load_lora_adapter", {"lora_name": "beta", "lora_path": str(b)}).status_code == 200
            want = answer(srv, "beta", max_tokens=None)  # as the page asks: the persona's own length
            page.focus("#persona")  # opening the list asks the server again
            page.wait_for_function("document.querySelectorAll('#persona option').length === 2")
            page.select_option("#persona", "beta")
            page.fill("#temperature", "0")
            page.fill("#message", QUESTION)
            page.click("#send")
            page.wait_for_function("document.querySelector('.assistant')?.dataset.done !== undefined", timeout=60_000)
            assert page.get_attribute(".assistant", "data-done") == "1"
            assert page.get_attribute(".assistant", "data-persona") == "beta"
            assert page.text_content(".assistant") == want
        finally:
            browser.close()
            post(srv, "/v1/unload_lora_adapter", {"lora_name": "beta"})
    deadline = time.monotonic() + 30
    while "beta" in model_ids(srv) and time.monotonic() < deadline:
        time.sleep(0.1)
