"""serve.scheduler through the engine: rows of every persona (a weighted mix and the bare base included) decode in
one forward pass and answer as they do alone; a request joins a running batch at the next step and a finished row
leaves at once; ``seed`` and ``stop`` per row. Real tiny-model adapters, no HTTP."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from politician_lm.artifacts.roles import user_turn
from politician_lm.inference import load_persona
from politician_lm.serve.engine import Engine, Job, load_served
from politician_lm.serve.personas import PersonaSpec
from politician_lm.serve.scheduler import BASE
from politician_lm.serve.text import ReplyText

pytestmark = pytest.mark.slow

GREEDY = {"do_sample": False}
SAMPLED = {"do_sample": True, "temperature": 1.0, "top_k": 0}
QUESTIONS = [f"What is your view on topic number {i}?" for i in range(1, 5)]


def ask(question: str, prompt_format: str = "plain") -> list[dict[str, str]]:
    return [user_turn(question, prompt_format)]


@pytest.fixture(scope="module")
def engine(voices, registry, tiny_path):
    a, b = voices
    (chat_adapter,) = [
        e["adapters"][0]["path"] for n, e in yaml.safe_load(registry.read_text()).items() if n == "gamma"
    ]
    specs = [
        PersonaSpec("alpha", [str(a)], [1.0], tiny_path),
        PersonaSpec("beta", [str(b)], [1.0], tiny_path),
        PersonaSpec("mix", [str(a), str(b)], [0.7, 0.6], tiny_path),
        PersonaSpec("base", [], [], tiny_path),  # the bare base model: its rows name PEFT's __base__
        PersonaSpec("gamma", [chat_adapter], [1.0], tiny_path),  # chat format, a system prompt: a long prompt head
    ]
    eng = Engine(load_served(specs), max_batch_size=8, batch_wait_s=0.3, max_pending=16)
    yield eng
    eng.close()


class Passes(list):
    """The forward passes the engine runs: the adapters of their rows (``self``) and their input widths."""

    widths: list[int]

    def clear(self) -> None:
        super().clear()
        self.widths.clear()


@pytest.fixture
def forwards(engine, monkeypatch) -> Passes:
    seen = Passes()
    seen.widths = []
    real = engine.batch._logits

    def logits(ids, mask, cache, adapters):
        seen.append(list(adapters))
        seen.widths.append(ids.shape[1])
        return real(ids, mask, cache, adapters)

    monkeypatch.setattr(engine.batch, "_logits", logits)
    return seen


def job(loop, persona: str, question: str, n: int, settings: dict, **kw) -> Job:
    return Job(persona, ask(question, "chat" if persona == "gamma" else "plain"), n, settings, loop, **kw)


async def done(j: Job) -> Job:
    while (await asyncio.wait_for(j.events.get(), 120))[0] != "done":
        pass
    return j


def run(engine: Engine, requests: list[tuple]) -> list[Job]:
    """Submit ``(persona, question, max_new_tokens, settings, extra Job fields)`` at once; wait for all."""

    async def go() -> list[Job]:
        loop = asyncio.get_running_loop()
        jobs = [job(loop, p, q, n, s, **kw) for p, q, n, s, kw in requests]
        assert all(engine.submit(j) for j in jobs)
        return [await done(j) for j in jobs]

    return asyncio.run(go())


def alone(engine: Engine, persona: str, question: str, n: int = 16, settings: dict = GREEDY, **kw) -> list[int]:
    (j,) = run(engine, [(persona, question, n, settings, kw)])
    assert j.error is None, j.error
    return j.tokens


def test_three_personas_a_mix_and_the_base_share_one_forward_pass_and_answer_as_alone(engine, forwards):
    personas = ["alpha", "beta", "mix", "base"]
    want = {p: alone(engine, p, q) for p, q in zip(personas, QUESTIONS)}
    assert len({tuple(t) for t in want.values()}) == 4, want  # four different answers: a mix-up would show
    forwards.clear()
    together = run(engine, [(p, q, 16, GREEDY, {}) for p, q in zip(personas, QUESTIONS)])
    assert {j.persona: j.tokens for j in together} == want
    adapters = {p: engine.personas[p].adapter for p in personas}
    assert adapters["base"] == BASE and len(set(adapters.values())) == 4  # the mix is ONE adapter of its own
    assert any(sorted(f) == sorted(adapters.values()) for f in forwards)  # one forward pass for all four rows


def test_rows_of_different_prompt_lengths_sent_together_each_get_their_own_first_token(engine, forwards):
    """Prompts of different lengths sent together prefill in one left-padded forward pass: each job must still get
    its own first token (a server once streamed one row's first token to another request under load, when each
    length ran alone and joined the batch group by group). The tiny model opens every answer with the same label
    token, so each prompt here already ends with it and the first token picked is the answer's first word."""
    requests = [("alpha", QUESTIONS[0]), ("beta", "What about jobs?"), ("alpha", QUESTIONS[3])]
    label = alone(engine, "alpha", QUESTIONS[0], 2)  # "POLITICIAN:"
    ids = [engine.personas[p].persona.prompt_ids(ask(q)) + label for p, q in requests]
    assert len(ids[0]) == len(ids[2]) != len(ids[1])  # the third joins with the first, before the second
    want = [alone(engine, p, q, 6, prompt_ids=i) for (p, q), i in zip(requests, ids)]
    assert len({t[0] for t in want}) > 1, want  # different first tokens: a swap would show
    forwards.clear()
    together = run(engine, [(p, q, 6, GREEDY, {"prompt_ids": i}) for (p, q), i in zip(requests, ids)])
    assert len(forwards[0]) == 3 and forwards.widths[1] == 1  # one prefill pass for both lengths, then decoding
    assert [j.tokens for j in together] == want


def test_rows_with_and_without_a_prompt_head_prefill_in_one_pass_and_answer_as_alone(engine, forwards):
    """gamma's rows start from its cached prompt head, the others run whole: sent together they share one
    prefill pass (heads left-padded to one width, the rest of each prompt left-padded after them) and each answer
    is the one its prompt gets alone."""
    requests = [("gamma", QUESTIONS[0]), ("base", QUESTIONS[1]), ("alpha", "Jobs?"), ("gamma", QUESTIONS[2])]
    want = [alone(engine, p, q) for p, q in requests]
    assert len({tuple(t) for t in want}) == len(want), want
    forwards.clear()
    together = run(engine, [(p, q, 16, GREEDY, {}) for p, q in requests])
    assert [j.error for j in together] == [None] * len(requests)
    assert [j.tokens for j in together] == want
    assert sorted(forwards[0]) == sorted(engine.personas[p].adapter for p, _ in requests)  # all four in pass one
    assert forwards.widths[1:] == [1] * (len(forwards.widths) - 1)  # every later pass decodes one token a row


def test_a_request_joins_a_running_batch_and_a_finished_row_leaves_at_once(engine, forwards):
    """A long row is mid-decode when a shorter request (another persona, another prompt length) arrives: it joins
    at the next step, finishes while the long row still runs, and both answer as they do alone."""
    long_q, short_q = QUESTIONS[0], "What about jobs?"
    long_settings = {"do_sample": False, "min_new_tokens": 60}
    want_long = alone(engine, "alpha", long_q, 60, long_settings)
    want_short = alone(engine, "beta", short_q, 8)
    before = engine.snapshot()
    forwards.clear()

    async def go() -> tuple[Job, Job, int]:
        loop = asyncio.get_running_loop()
        first = job(loop, "alpha", long_q, 60, long_settings)
        assert engine.submit(first)
        for _ in range(5):  # the long row is decoding
            assert (await asyncio.wait_for(first.events.get(), 120))[0] == "token"
        second = job(loop, "beta", short_q, 8, GREEDY)
        assert engine.submit(second)
        await done(second)
        running_when_second_ended = len(first.tokens) if first.finish_reason is None else -1
        return await done(first), second, running_when_second_ended

    first, second, at = asyncio.run(go())
    assert second.tokens == want_short and first.tokens == want_long
    assert 0 < at < 60, at  # the second request ended while the first still ran: it did not wait for it
    after = engine.snapshot()
    assert after["joined"] - before["joined"] == 1 and after["batches"] - before["batches"] == 1
    sizes = [len(f) for f in forwards]
    both = [i for i, f in enumerate(forwards) if len(f) == 2]
    assert both and sizes[both[-1] + 1 :] and all(n == 1 for n in sizes[both[-1] + 1 :])  # it left at once
    assert len(both) == len(second.tokens) - 1 + (second.finish_reason == "stop")  # one joint step per token


def test_a_wider_prompt_joins_a_running_batch_a_middle_row_leaves_and_all_answer_as_alone(engine, forwards):
    """Three short rows are decoding when gamma's long prompt (its system prompt head) arrives: the cache's window
    opens to the left for it. The middle row ends first, the last row moves into its slot, and the long rows run
    past the cache's room (it is reallocated); every answer is the one its prompt gets alone."""
    requests = [("alpha", "Jobs?", 70), ("beta", "Taxes?", 6), ("base", "Roads?", 70)]
    late = ("gamma", QUESTIONS[0], 70)
    want = [alone(engine, p, q, n, GREEDY) for p, q, n in requests + [late]]
    assert len(engine.personas["gamma"].persona.prompt_ids(ask(late[1], "chat"))) > max(
        len(engine.personas[p].persona.prompt_ids(ask(q))) + 3 for p, q, _ in requests
    )
    forwards.clear()

    async def go() -> list[Job]:
        loop = asyncio.get_running_loop()
        jobs = [job(loop, p, q, n, GREEDY) for p, q, n in requests]
        assert all(engine.submit(j) for j in jobs)
        for _ in range(3):
            assert (await asyncio.wait_for(jobs[0].events.get(), 120))[0] == "token"
        jobs.append(job(loop, *late, GREEDY))
        assert engine.submit(jobs[-1])
        return [await done(j) for j in jobs]

    together = asyncio.run(go())
    assert [j.error for j in together] == [None] * 4
    assert [j.tokens for j in together] == want
    assert max(len(f) for f in forwards) == 4 and len(forwards[-1]) < 4  # all four decoded together, then fewer


def test_a_seed_makes_a_sampled_answer_the_same_alone_and_in_a_batch(engine):
    first = alone(engine, "alpha", QUESTIONS[0], 24, SAMPLED, seed=1234)
    assert alone(engine, "alpha", QUESTIONS[0], 24, SAMPLED, seed=1234) == first
    crowd = run(
        engine,
        [
            ("beta", QUESTIONS[1], 24, SAMPLED, {}),
            ("alpha", QUESTIONS[0], 24, SAMPLED, {"seed": 1234}),
            ("mix", QUESTIONS[2], 24, SAMPLED, {"seed": 99}),
        ],
    )
    assert crowd[1].tokens == first
    others = [alone(engine, "alpha", QUESTIONS[0], 24, SAMPLED, seed=s) for s in (1, 2, 3)]
    assert any(o != first for o in others)  # the seed chooses the draw; sampling did happen


def test_a_stop_string_ends_the_row_before_it(engine):
    full = alone(engine, "alpha", QUESTIONS[0], 24)
    tokenizer = engine.personas["alpha"].persona.tokenizer
    whole = ReplyText(tokenizer)
    whole.ids = full
    text = whole.push(None, final=True)
    stop = text.split()[2]  # a word from the middle of the answer
    (j,) = run(engine, [("alpha", QUESTIONS[0], 24, GREEDY, {"stop": ("zzz-never", stop)})])
    assert j.finish_reason == "stop" and j.tokens == full[: len(j.tokens)] and len(j.tokens) < len(full)
    cut = ReplyText(tokenizer, j.stop)
    cut.ids = j.tokens
    assert cut.push(None, final=True) == text[: text.index(stop)]


def test_a_persona_prompt_head_runs_once_and_answers_stay_as_generate(engine, forwards):
    """gamma's prompts start with its system prompt and chat template: that head runs once, later prompts run
    only their own tokens after it, and every answer equals ``generate``'s for the prompt alone."""
    gamma = engine.personas["gamma"]
    head = len(gamma.prefix.ids)
    assert head >= 8, head
    want = load_persona(gamma.spec.adapters, [1.0], gamma.spec.base_model).generate(
        [ask(q, "chat") for q in QUESTIONS[:2]], batch_size=1, max_new_tokens=16, do_sample=False
    )
    got = [alone(engine, "gamma", q) for q in QUESTIONS[:2]]
    tokenizer = gamma.persona.tokenizer
    assert [tokenizer.decode(t, skip_special_tokens=True).strip() for t in got] == [w.strip() for w in want]
    prompt = len(gamma.persona.prompt_ids(ask(QUESTIONS[1], "chat")))
    assert forwards.widths.count(head) <= 1 and forwards.widths.count(prompt) == 0  # never the whole prompt again
    assert prompt - head in forwards.widths  # the second question ran only its own tokens
