"""serve.engine: the shared model answers each persona as ``generate`` does, batches rows that stop on their own,
cancels, refuses work beyond its slots, and survives a failing batch. Real tiny-model adapters, no HTTP."""

from __future__ import annotations

import asyncio

import pytest

from politician_lm.artifacts.roles import user_turn
from politician_lm.inference import load_persona
from politician_lm.serve.engine import Engine, Job, load_served
from politician_lm.serve.personas import PersonaSpec

pytestmark = pytest.mark.slow

GREEDY = {"do_sample": False}
QUESTIONS = [f"What is your view on topic number {i}?" for i in range(1, 5)]  # the same length in tokens


def ask(question: str) -> list[dict[str, str]]:
    return [user_turn(question, "plain")]  # the adapters are plain-format, trained with USER: labels


@pytest.fixture(scope="module")
def specs(voices, tiny_path) -> dict[str, PersonaSpec]:
    a, b = voices
    return {
        "alpha": PersonaSpec("alpha", [str(a)], [1.0], tiny_path),
        "beta": PersonaSpec("beta", [str(b)], [1.0], tiny_path),
        "mix": PersonaSpec("mix", [str(a), str(b)], [0.7, 0.6], tiny_path),
    }


@pytest.fixture(scope="module")
def engine(specs):
    eng = Engine(load_served(list(specs.values())), max_batch_size=8, batch_wait_s=0.3, max_pending=16)
    yield eng
    eng.close()


def run(engine: Engine, requests: list[tuple[str, str, int, dict]]) -> list[Job]:
    """Submit ``(persona, question, max_new_tokens, settings)`` requests at once and wait until all are done."""

    async def go() -> list[Job]:
        loop = asyncio.get_running_loop()
        jobs = [Job(p, ask(q), n, s, loop) for p, q, n, s in requests]
        assert all(engine.submit(j) for j in jobs)
        for job in jobs:
            while (await asyncio.wait_for(job.events.get(), 120))[0] != "done":
                pass
        return jobs

    return asyncio.run(go())


def text(engine: Engine, job: Job) -> str:
    return engine.personas[job.persona].persona.tokenizer.decode(job.tokens, skip_special_tokens=True)


@pytest.mark.parametrize("name", ["alpha", "beta", "mix"])
def test_a_job_answers_as_generate_does(engine, specs, name):
    spec = specs[name]
    want = load_persona(spec.adapters, spec.weights, spec.base_model).generate(
        [ask(QUESTIONS[0])], max_new_tokens=24, do_sample=False
    )[0]
    (job,) = run(engine, [(name, QUESTIONS[0], 24, GREEDY)])
    assert job.finish_reason in ("stop", "length") and job.error is None
    assert text(engine, job).strip() == want.strip() and want.strip()


def test_a_weighted_persona_answers_unlike_each_of_its_adapters(engine):
    jobs = run(engine, [(p, QUESTIONS[0], 24, GREEDY) for p in ("alpha", "beta", "mix")])
    answers = {j.persona: text(engine, j) for j in jobs}
    assert answers["mix"] != answers["alpha"] and answers["mix"] != answers["beta"], answers
    assert answers["alpha"] != answers["beta"], answers


def test_batched_rows_match_their_answers_alone_and_never_mix_personas(engine):
    alone = {(p, q): text(engine, run(engine, [(p, q, 16, GREEDY)])[0]) for p in ("alpha", "beta") for q in QUESTIONS}
    before = engine.snapshot()
    together = run(engine, [(p, q, 16, GREEDY) for p, q in alone])
    after = engine.snapshot()
    assert {(j.persona, j.conversation[0]["content"][len("USER: ") :]): text(engine, j) for j in together} == alone
    assert after["completed"] - before["completed"] == len(alone)
    assert after["batches"] - before["batches"] < len(alone) and after["max_batch_rows"] > 1  # rows shared batches
    # the model thread's time is counted: every prefill forward and every decoding step, timed
    assert 0 < after["prefills"] - before["prefills"] <= after["batched_rows"] - before["batched_rows"]
    assert after["prefill_seconds"] > before["prefill_seconds"] and after["step_seconds"] > before["step_seconds"]


def test_each_row_stops_at_its_own_max_tokens(engine):
    short, long = run(engine, [("alpha", QUESTIONS[1], 3, GREEDY), ("alpha", QUESTIONS[1], 12, GREEDY)])
    assert len(short.tokens) == 3 and short.finish_reason == "length"
    assert long.tokens[:3] == short.tokens and len(long.tokens) > 3  # the short row's stop did not end the long one


def test_cancel_frees_the_slot_and_a_full_engine_refuses(engine):
    one_slot = Engine(engine.served, max_pending=1, batch_wait_s=0.0)
    long = {"do_sample": False, "min_new_tokens": 400}

    async def go() -> tuple[Job, bool]:
        loop = asyncio.get_running_loop()
        job = Job("alpha", ask(QUESTIONS[2]), 400, long, loop)
        assert one_slot.submit(job)
        refused = not one_slot.submit(Job("alpha", ask(QUESTIONS[2]), 4, GREEDY, loop))
        assert (await asyncio.wait_for(job.events.get(), 120))[0] == "token"  # generating
        one_slot.cancel(job)
        while (await asyncio.wait_for(job.events.get(), 120))[0] != "done":
            pass
        return job, refused

    try:
        job, refused = asyncio.run(go())
        stats = one_slot.snapshot()
    finally:
        one_slot.close()
    assert refused
    assert job.finish_reason == "cancelled" and len(job.tokens) < 400
    assert stats["live"] == 0 and stats["cancelled"] == 1 and stats["completed"] == 0


def test_a_failing_batch_fails_its_rows_and_the_engine_keeps_serving(engine):
    before = engine.snapshot()
    (bad,) = run(engine, [("beta", QUESTIONS[3], 8, {"do_sample": True, "temperature": -1.0})])
    assert bad.finish_reason == "error" and "temperature" in bad.error
    (good,) = run(engine, [("beta", QUESTIONS[3], 8, GREEDY)])
    assert good.finish_reason in ("stop", "length") and good.tokens
    assert engine.snapshot()["failed"] == before["failed"] + 1
