"""serve: real servers (subprocesses of `politician-lm serve`) on tiny-model personas, the official openai client,
answers equal to `politician-lm generate`, batching without cross-persona leaks, limits, bad input, API key,
disconnects, readiness, and the chat page in a real headless Chromium."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from politician_lm.artifacts.roles import strip_reply_label
from politician_lm.cli import main
from tests.helpers import ROOT
from tests.serve.server import BROWSER_ARGS, as_generate_prompt, chromium, reference, serving

pytestmark = pytest.mark.slow

QUESTION = "What is your view on topic number 3?"
ARTIFACTS = Path(os.environ.get("POLITICIAN_LM_TEST_ARTIFACTS", ROOT / "test-artifacts"))


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    limits = ("--max_tokens", "64", "--max_prompt_tokens", "200", "--max_batch_size", "8", "--batch_wait_ms", "50")
    yield from serving(tmp_path_factory.mktemp("log"), registry, *limits)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


# -- the OpenAI surface -------------------------------------------------------------------------------------------
def test_models_lists_every_persona_with_its_base_and_adapters(client, registry, tiny_path):
    models = {m.id: m.model_dump() for m in client.models.list().data}
    assert sorted(models) == ["alpha", "beta", "gamma", "mix"]
    entries = yaml.safe_load(registry.read_text())
    for name, card in models.items():
        assert card["parent"] == tiny_path, card  # as vLLM lists a LoRA adapter: its base is the parent ...
        assert card["adapters"] == entries[name]["adapters"]
    assert models["alpha"]["root"] == entries["alpha"]["adapters"][0]["path"]  # ... and its folder the root
    assert models["mix"]["root"] == tiny_path  # a mix has no one folder


@pytest.mark.parametrize("persona", ["alpha", "beta", "gamma", "mix"])
def test_streamed_and_plain_answers_equal_generate_greedy(client, registry, persona, tmp_path):
    want = reference(registry, persona, as_generate_prompt(persona, QUESTION), tmp=tmp_path)
    messages = [{"role": "user", "content": QUESTION}]
    plain = client.chat.completions.create(model=persona, messages=messages, temperature=0, max_tokens=24)
    pieces = [
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=persona, messages=messages, temperature=0, max_tokens=24, stream=True
        )
        if c.choices
    ]
    assert plain.choices[0].message.content == want and want
    assert "".join(pieces) == want and sum(bool(p) for p in pieces) > 1  # streamed in several pieces
    assert plain.model == persona and plain.choices[0].finish_reason in ("stop", "length")
    assert 0 < plain.usage.completion_tokens <= 24 and plain.usage.prompt_tokens > 0


def test_personas_answer_differently(client):
    answers = {
        p: client.chat.completions.create(
            model=p, messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=24
        )
        .choices[0]
        .message.content
        for p in ("alpha", "beta", "mix")
    }
    assert len(set(answers.values())) == 3, answers


def test_concurrent_requests_are_batched_without_mixing_personas(client, server, registry, tmp_path):
    """16 requests at once over two personas: each answer equals that persona's answer alone. The questions have
    the same token count, so a batch needs no padding and must reproduce the single answers exactly."""
    questions = [f"What is your view on topic number {i}?" for i in range(1, 9)]
    alone = {
        (p, q): client.chat.completions.create(
            model=p, messages=[{"role": "user", "content": q}], temperature=0, max_tokens=24
        )
        .choices[0]
        .message.content
        for p in ("alpha", "beta")
        for q in questions
    }
    assert all(alone[("alpha", q)] != alone[("beta", q)] for q in questions)
    before = server.stats()

    def ask(key):
        p, q = key
        return (
            client.chat.completions.create(
                model=p, messages=[{"role": "user", "content": q}], temperature=0, max_tokens=24
            )
            .choices[0]
            .message.content
        )

    with ThreadPoolExecutor(16) as pool:
        together = dict(zip(alone, pool.map(ask, list(alone))))
    assert together == alone
    after = server.stats()
    assert after["completed"] - before["completed"] == 16 and after["max_batch_rows"] > 1
    assert after["batches"] - before["batches"] < 16  # some requests shared a batch


def test_client_system_message_is_appended_to_the_persona_prompt(client, registry, tmp_path):
    """Policy: the persona's trained system prompt stays first; the client's system text follows a blank line."""
    persona_prompt = json.loads(
        (Path(yaml.safe_load(registry.read_text())["gamma"]["adapters"][0]["path"]) / "politician_lm.json").read_text()
    )["system_prompt"]
    extra = "Answer in one sentence."
    want = reference(
        registry,
        "gamma",
        messages=[{"role": "system", "content": f"{persona_prompt}\n\n{extra}"}, {"role": "user", "content": QUESTION}],
        tmp=tmp_path,
    )
    with_system = client.chat.completions.create(
        model="gamma",
        temperature=0,
        max_tokens=24,
        messages=[{"role": "system", "content": extra}, {"role": "user", "content": QUESTION}],
    )
    without = client.chat.completions.create(
        model="gamma", temperature=0, max_tokens=24, messages=[{"role": "user", "content": QUESTION}]
    )
    assert with_system.choices[0].message.content == want
    assert with_system.usage.prompt_tokens > without.usage.prompt_tokens


def test_max_tokens_is_capped(client):
    out = client.chat.completions.create(
        model="alpha",
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0,
        max_tokens=100_000,
        extra_body={"min_tokens": 100_000},
    )
    assert out.usage.completion_tokens == 64 and out.choices[0].finish_reason == "length"


# -- seed and stop -----------------------------------------------------------------------------------------------------
def test_a_seed_gives_the_same_sampled_answer_twice_alone_and_among_others(client):
    def sampled(persona: str, seed: int | None) -> str:
        extra = {"seed": seed} if seed is not None else {}
        messages = [{"role": "user", "content": QUESTION}]
        out = client.chat.completions.create(model=persona, messages=messages, temperature=1.0, max_tokens=24, **extra)
        return out.choices[0].message.content

    first = sampled("alpha", 7)
    assert sampled("alpha", 7) == first
    with ThreadPoolExecutor(4) as pool:
        crowd = list(pool.map(lambda args: sampled(*args), [("beta", 1), ("alpha", 7), ("mix", None), ("alpha", 8)]))
    assert crowd[1] == first
    assert {sampled("alpha", s) for s in (1, 2, 3)} - {first}  # the seed chooses the draw; sampling did happen


def test_stop_ends_the_answer_before_it_and_a_stream_never_sends_it(client):
    messages = [{"role": "user", "content": QUESTION}]
    full = client.chat.completions.create(model="beta", messages=messages, temperature=0, max_tokens=24)
    words = full.choices[0].message.content.split()
    assert len(words) >= 3, words
    stop = words[len(words) // 2]
    want = full.choices[0].message.content.split(stop)[0]
    plain = client.chat.completions.create(
        model="beta", messages=messages, temperature=0, max_tokens=24, stop=["never-said", stop]
    )
    chunks = list(
        client.chat.completions.create(
            model="beta", messages=messages, temperature=0, max_tokens=24, stop=stop, stream=True
        )
    )
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert plain.choices[0].message.content == want == "".join(pieces)
    assert plain.choices[0].finish_reason == "stop" and reasons == ["stop"]
    assert plain.usage.completion_tokens < full.usage.completion_tokens  # the row stopped there, not at the cap


# -- bad input: one clear message in OpenAI's error shape -------------------------------------------------------------
OK = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
BAD = [
    ("malformed JSON", b'{"model": "alpha", "messages": [', 400, "malformed JSON"),
    ("not an object", b"[1, 2]", 400, "JSON object"),
    ("NaN", b'{"model": "alpha", "temperature": NaN, "messages": [{"role": "user", "content": "hi"}]}', 400, "NaN"),
    ("messages not a list", {**OK, "messages": "hi"}, 400, "messages"),
    ("empty messages", {**OK, "messages": []}, 400, "messages"),
    ("content not text", {**OK, "messages": [{"role": "user", "content": 5}]}, 400, "content"),
    ("unknown role", {**OK, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ("max_tokens a string", {**OK, "max_tokens": "ten"}, 400, "max_tokens"),
    ("max_tokens zero", {**OK, "max_tokens": 0}, 400, "max_tokens"),
    ("stream a string", {**OK, "stream": "yes"}, 400, "stream"),
    ("temperature too high", {**OK, "temperature": 5}, 400, "temperature"),
    ("n above 1", {**OK, "n": 2}, 400, "n"),
    ("presence_penalty", {**OK, "presence_penalty": 0.5}, 400, "presence_penalty: not supported"),
    ("frequency_penalty", {**OK, "frequency_penalty": -1}, 400, "frequency_penalty: not supported"),
    ("logit_bias", {**OK, "logit_bias": {"5": 10}}, 400, "logit_bias: not supported"),
    ("logprobs", {**OK, "logprobs": True}, 400, "logprobs: not supported"),
    ("tools", {**OK, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools are not supported"),
    ("json answers", {**OK, "response_format": {"type": "json_object"}}, 400, "only text answers"),
    ("stop empty", {**OK, "stop": ""}, 400, "stop"),
    ("stop not text", {**OK, "stop": [1]}, 400, "stop"),
    ("seed not a number", {**OK, "seed": "x"}, 400, "seed"),
    ("model missing", {"messages": OK["messages"]}, 400, "model"),
    (
        "last turn not the user's",
        {**OK, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        400,
        "user message",
    ),
    ("over-long prompt", {**OK, "messages": [{"role": "user", "content": "word " * 400}]}, 400, "tokens"),
    ("unknown persona", {**OK, "model": "nixon"}, 404, "nixon"),
    ("body too large", {**OK, "messages": [{"role": "user", "content": "x" * (1 << 20)}]}, 413, "bytes"),
]


@pytest.mark.parametrize("body,status,needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_requests_get_one_clear_openai_error(server, body, status, needle):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(
        server.url + "/v1/chat/completions", content=content, headers={"content-type": "application/json"}, timeout=30
    )
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert needle in err["message"] and "\n" not in err["message"], err
    if status == 404:
        assert err["code"] == "model_not_found" and err["param"] == "model"


def test_unsupported_fields_are_refused_unless_left_at_no_effect(server, client):
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as exc:
        client.chat.completions.create(model="alpha", messages=OK["messages"], frequency_penalty=0.7)
    assert exc.value.code == "unsupported_parameter" and exc.value.param == "frequency_penalty"
    refused = {  # every field serve cannot honour, each set to a value that would change the answer
        "n": 2,
        "presence_penalty": 0.5,
        "frequency_penalty": -1,
        "logit_bias": {"5": 10},
        "logprobs": True,
        "top_logprobs": 2,
        "best_of": 2,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "functions": [{"name": "f"}],
        "tool_choice": "required",
        "response_format": {"type": "json_object"},
        "audio": {"voice": "alloy", "format": "wav"},
        "modalities": ["text", "audio"],
        "prediction": {"type": "content", "content": "x"},
    }
    for name, value in refused.items():
        r = httpx.post(server.url + "/v1/chat/completions", json={**OK, name: value, "max_tokens": 2}, timeout=60)
        err = r.json()["error"] if r.status_code == 400 else r.text
        assert r.status_code == 400 and err["code"] == "unsupported_parameter" and err["param"] == name, (name, err)
    neutral = {
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "logit_bias": {},
        "logprobs": False,
        "n": 1,
        "tool_choice": "none",
        "best_of": None,
        "response_format": {"type": "text"},
        "user": "someone",
    }
    r = httpx.post(server.url + "/v1/chat/completions", json={**OK, **neutral, "max_tokens": 2}, timeout=60)
    assert r.status_code == 200, r.text
    r = httpx.post(server.url + "/v1/chat/completions", json={**OK, "n": None, "max_tokens": 2}, timeout=60)
    assert r.status_code == 200, r.text  # a null n was a 400 by the strict type, though the table calls it harmless


def test_unknown_persona_through_the_openai_client(client):
    from openai import NotFoundError

    with pytest.raises(NotFoundError) as exc:
        client.chat.completions.create(model="nixon", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 404 and exc.value.code == "model_not_found"


def test_unknown_route_and_health(server):
    r = httpx.get(server.url + "/v2/nothing", timeout=10)
    assert r.status_code == 404 and "message" in r.json()["error"]
    health = httpx.get(server.url + "/health", timeout=10).json()
    assert health["status"] == "ok" and health["ready"] and health["peak_rss_mb"] > 0
    assert httpx.get(server.url + "/ready", timeout=10).json() == {
        "status": "ready",
        "personas": ["alpha", "beta", "gamma", "mix"],
    }


def test_binds_to_localhost_by_default(server):
    listening = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A":  # LISTEN
            addr, port = local.split(":")
            listening.add((addr, int(port, 16)))
    assert ("0100007F", server.port) in listening and ("00000000", server.port) not in listening


# -- slots, disconnects and the API key --------------------------------------------------------------------------------
SECRET = "sk-test-4f9c1d2e7a"
WRONG = "sk-wrong-8b3a6c0f1e"


@pytest.fixture(scope="module")
def keyed_server(registry, tmp_path_factory):
    """One request slot, a long token cap, and an API key from the environment."""
    limits = ("--personas", "alpha", "--max_pending", "1", "--max_tokens", "900")
    yield from serving(tmp_path_factory.mktemp("keyed"), registry, *limits, api_key=SECRET, unlogged=(WRONG,))


def test_api_key_is_required_when_set(keyed_server):
    url = keyed_server.url + "/v1/models"
    for headers in ({}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": SECRET}):
        r = httpx.get(url, headers=headers, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", headers
    assert httpx.get(url, headers={"Authorization": f"Bearer {SECRET}"}, timeout=10).json()["data"][0]["id"] == "alpha"
    assert httpx.get(keyed_server.url + "/health", timeout=10).status_code == 200  # health needs no key
    assert keyed_server.log_path.read_text().count(SECRET) == 0


def test_a_client_that_disconnects_mid_stream_frees_its_slot(keyed_server):
    auth = {"Authorization": f"Bearer {SECRET}"}
    body = {
        "model": "alpha",
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
        "temperature": 0,
        "max_tokens": 900,
        "min_tokens": 900,
    }
    before = keyed_server.stats()
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", keyed_server.url + "/v1/chat/completions", json=body, headers=auth) as stream:
            lines = stream.iter_lines()
            content = next(ln for ln in lines if '"content": "' in ln and '"content": ""' not in ln)
            assert content.startswith("data: ")
            busy = httpx.post(
                keyed_server.url + "/v1/chat/completions", json={**body, "stream": False}, headers=auth, timeout=60
            )
            assert busy.status_code == 429 and busy.json()["error"]["code"] == "server_busy"
        # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 60
    while (stats := keyed_server.stats())["live"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stats["live"] == 0 and stats["cancelled"] == before["cancelled"] + 1
    assert stats["generated_tokens"] - before["generated_tokens"] < 900  # stopped early, not run to the cap
    ok = httpx.post(
        keyed_server.url + "/v1/chat/completions",
        headers=auth,
        timeout=60,
        json={"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    )
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] <= 4


# -- readiness while loading, without a subprocess ---------------------------------------------------------------------
def test_ready_is_503_until_the_personas_are_loaded_and_reports_a_failure():
    from starlette.testclient import TestClient

    from politician_lm.serve.api import ServerState, create_app

    release = threading.Event()

    class Loaded:
        personas: dict = {}

        def snapshot(self):
            return {"live": 0}

        def close(self):
            pass

    loaders = []

    def slow_load():
        loaders.append(threading.current_thread())
        assert release.wait(30)
        return Loaded()

    state = ServerState(load=slow_load)
    with TestClient(create_app(state)) as http:
        assert http.get("/health").status_code == 200
        r = http.get("/ready")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = http.post("/v1/chat/completions", json=OK)
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"
        release.set()
        deadline = time.monotonic() + 30
        while http.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert http.get("/ready").json()["status"] == "ready"
        # the loading thread has ended, and its OpenMP pool with it, while the server runs (api.create_app)
        loaders[0].join(30)
        assert not loaders[0].is_alive()

    fatal = threading.Event()

    def broken_load():
        raise RuntimeError("adapter folder vanished\nsecond line")

    failed = ServerState(load=broken_load, on_fatal=fatal.set)
    with TestClient(create_app(failed)) as http:
        assert fatal.wait(30)
        r = http.get("/ready")
        assert r.status_code == 503 and r.json() == {"status": "failed", "error": "adapter folder vanished"}


# -- the command line: one line before anything loads ------------------------------------------------------------------
def run_serve(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["serve", *args])
    return exc.value.code, capsys.readouterr().err.strip()


def test_serve_errors_are_one_line(registry, tiny_path, tmp_path, capsys):
    code, err = run_serve(["--registry", str(registry), "--personas", "nixon"], capsys)
    assert code == 2 and "no persona 'nixon'" in err and len(err.splitlines()) == 1
    two = tmp_path / "two.yaml"
    entries = yaml.safe_load(registry.read_text())
    entries["beta"]["base_model"] = str(ROOT / "checkpoints" / "SmolLM2-135M-Instruct")
    two.write_text(yaml.safe_dump(entries))
    code, err = run_serve(["--registry", str(two), "--personas", "alpha,beta"], capsys)
    assert code == 2 and "2 base models" in err and "--personas" in err and len(err.splitlines()) == 1
    code, err = run_serve(["--adapters", str(tmp_path / "missing")], capsys)
    assert code == 2 and "adapter folder does not exist" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, err = run_serve(["--registry", str(registry), "--port", str(taken.getsockname()[1])], capsys)
    assert code == 2 and "already in use" in err and len(err.splitlines()) == 1


def test_streamed_pieces_add_up_to_the_answer(tokenizer):
    from politician_lm.serve.api import ReplyText

    for text in ("POLITICIAN: Folks, jobs é ünïcode.", "  POLITICIAN:\nHere's the deal", "Folks: here", "POL"):
        ids = tokenizer(text, add_special_tokens=False).input_ids
        stream = ReplyText(tokenizer)
        pieces = [stream.push(i) for i in ids] + [stream.push(None, final=True)]
        assert "".join(pieces) == strip_reply_label(tokenizer.decode(ids, skip_special_tokens=True)), text


# -- the chat page in a real browser -----------------------------------------------------------------------------------
# The page's fetch of a completion, re-chunked to one server-sent event a read, a task apart. The server streams each
# token as its own event (test_streamed_and_plain_answers_equal_generate_greedy), but under load the browser can read
# all of a short answer's events at once, and then even a page that renders each delta as it parses it shows one
# length. Delivered one event a read, a page that renders as it goes shows every length; one that renders only at
# the end still shows one, so the piece-by-piece assertion below stays able to fail, without depending on timing.
ONE_EVENT_A_READ = """(() => {
  const realFetch = window.fetch;
  window.fetch = async (...args) => {
    const res = await realFetch(...args);
    if (!res.body || !String(args[0]).includes("/chat/completions")) return res;
    const reader = res.body.getReader(), enc = new TextEncoder(), dec = new TextDecoder();
    let buffer = "";
    const body = new ReadableStream({async pull(controller) {
      for (;;) {
        const cut = buffer.indexOf("\\n\\n");
        if (cut >= 0) {
          const event = buffer.slice(0, cut + 2);
          buffer = buffer.slice(cut + 2);
          await new Promise((resolve) => setTimeout(resolve, 0));
          controller.enqueue(enc.encode(event));
          return;
        }
        const {value, done} = await reader.read();
        if (done) { if (buffer) controller.enqueue(enc.encode(buffer)); controller.close(); return; }
        buffer += dec.decode(value, {stream: true});
      }
    }});
    return new Response(body, {status: res.status, statusText: res.statusText, headers: res.headers});
  };
})();"""


def test_chat_page_streams_an_answer_in_headless_chromium(server, client, tmp_path):
    exe = chromium()
    if exe is None:
        if os.environ.get("POLITICIAN_LM_REQUIRE_BROWSER"):
            pytest.fail("Chromium not found (set CHROMIUM or install it: apt-get install -y chromium)")
        pytest.skip("needs Chromium (apt-get install -y chromium); CI installs it and requires this test")
    from playwright.sync_api import sync_playwright

    want = (
        client.chat.completions.create(
            model="beta", messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=24
        )
        .choices[0]
        .message.content
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=BROWSER_ARGS)  # fresh profile each launch
        try:
            page = browser.new_page(viewport={"width": 900, "height": 600})
            page.add_init_script(ONE_EVENT_A_READ)
            page.goto(server.url + "/")
            page.wait_for_function("document.querySelectorAll('#persona option').length === 4")
            page.select_option("#persona", "beta")
            page.fill("#temperature", "0")
            # record every length the answer's text takes while it streams in
            page.evaluate("""() => { window.seen = [];
                new MutationObserver(() => { const a = document.querySelector('.assistant');
                  if (a) window.seen.push(a.textContent.length); })
                .observe(document.getElementById('log'), {childList: true, subtree: true, characterData: true}); }""")
            page.fill("#message", QUESTION)
            page.click("#send")
            page.wait_for_function("document.querySelector('.assistant')?.dataset.done !== undefined", timeout=60_000)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "serve_chat_page.png"), full_page=True)
            answer = page.text_content(".assistant")
            seen = page.evaluate("window.seen")
            assert page.get_attribute(".assistant", "data-done") == "1", answer
            assert answer == want
            assert len({n for n in seen if 0 < n < len(want)}) >= 2, seen  # text appeared piece by piece
            assert page.text_content(".user") == QUESTION
        finally:
            browser.close()
    assert (ARTIFACTS / "serve_chat_page.png").stat().st_size > 1000
