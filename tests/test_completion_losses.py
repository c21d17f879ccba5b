"""``Persona.completion_losses``: the head runs on the completion's positions only, rows are batched longest first,
and the numbers are those of the full-logits pass it replaced (kept below as the reference), in the caller's order."""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from dataclasses import replace

import pytest
import torch

from politician_lm.batch import IGNORE_INDEX
from politician_lm.data.templates import PromptStyle
from politician_lm.data.tokenize import encode
from politician_lm.inference import load_persona
from tests.helpers import ROOT, randomize_lora_b, tiny_lora_persona

pytestmark = pytest.mark.slow
RTOL = 1e-5


@torch.no_grad()
def reference_losses(persona, conversations, batch_size=8, dtype=torch.float32):
    """The pass before the head was split off: full-vocabulary logits for every position of every row, rows in input
    order, then a cross-entropy (in ``dtype``; it was fp32) over all positions with the prompt and padding ignored."""
    encoded = [
        encode(
            persona.tokenizer, *persona.style.render(c, persona.tokenizer), persona.context_window, add_bos=persona._bos
        )
        for c in conversations
    ]
    out = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(e["input_ids"]) for e in chunk)
        pad = persona.tokenizer.pad_token_id
        ids = torch.tensor([e["input_ids"] + [pad] * (width - len(e["input_ids"])) for e in chunk])
        mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in chunk])
        labels = torch.tensor([e["labels"] + [IGNORE_INDEX] * (width - len(e["labels"])) for e in chunk])
        logits = persona.model(
            input_ids=ids.to(persona.model.device), attention_mask=mask.to(persona.model.device)
        ).logits
        targets = labels[:, 1:].to(logits.device)
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].to(dtype).transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
        )
        out += [(float(n.sum()), int((t != IGNORE_INDEX).sum())) for n, t in zip(nll, targets)]
    return out


def assert_same(got, want, rtol=RTOL):
    assert len(got) == len(want)
    for i, ((loss, n), (ref_loss, ref_n)) in enumerate(zip(got, want)):
        assert n == ref_n, (i, n, ref_n)
        assert math.isclose(loss, ref_loss, rel_tol=rtol, abs_tol=1e-6), (i, loss, ref_loss)


def conversations(n: int = 11) -> list[list[dict[str, str]]]:
    """Rows of clearly different lengths (short and long prompts and answers, one and two exchanges), not sorted."""
    convs = []
    for i in range(n):
        words = " ".join(f"point{j}" for j in range((i * 7) % 23))
        conv = [
            {"role": "user", "content": f"USER: What is your view on topic number {i}? {words}"},
            {
                "role": "assistant",
                "content": "POLITICIAN: Folks, " + "the middle class comes first. " * (1 + (i * 5) % 6),
            },
        ]
        if i % 3 == 1:
            conv = [
                {"role": "user", "content": "USER: Hello."},
                {"role": "assistant", "content": "POLITICIAN: Here's the deal."},
                *conv,
            ]
        convs.append(conv)
    return convs


@pytest.fixture(scope="module")
def persona(tmp_path_factory, tiny_path):
    return tiny_lora_persona(tmp_path_factory.mktemp("ad"), tiny_path)


def test_the_rows_have_different_lengths(persona):
    lengths = {len(persona.prompt_ids(c[:-1])) for c in conversations()}
    assert len(lengths) > 5


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_matches_the_full_logits_pass_with_the_adapter(persona, batch_size):
    convs = conversations()
    got = persona.completion_losses(convs, batch_size, on_batch=lambda n: None)
    assert_same(got, reference_losses(persona, convs, batch_size))
    assert all(n > 0 for _, n in got)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_matches_the_full_logits_pass_with_the_adapter_disabled(persona, batch_size):
    convs = conversations()
    with persona.model.disable_adapter():
        got = persona.completion_losses(convs, batch_size, on_batch=lambda n: None)
        want = reference_losses(persona, convs, batch_size)
    assert_same(got, want)
    with_adapter = persona.completion_losses(convs, batch_size, on_batch=lambda n: None)
    assert all(abs(a - b) > 1e-3 for (a, _), (b, _) in zip(got, with_adapter))  # the context did turn it off


def test_the_head_sees_only_the_completion_positions(persona, monkeypatch):
    import politician_lm.inference as inference

    convs = conversations()
    split = inference._backbone_and_head(persona.model)
    assert split is not None
    monkeypatch.setattr(inference, "_backbone_and_head", lambda model: split)  # the check's own head call aside
    seen: list[int] = []
    real = inference.token_nll

    def spy(hidden, head, targets):  # what the output head is given: the hidden states it runs on
        assert head is split[1]
        seen.append(hidden.shape[:-1].numel())
        return real(hidden, head, targets)

    monkeypatch.setattr(inference, "token_nll", spy)
    got = persona.completion_losses(convs, 4, on_batch=lambda n: None)
    assert len(seen) == 3 and sum(seen) == sum(n for _, n in got)  # 11 rows in 3 batches, one head call each


def test_batches_longest_first_and_reports_each_batch(persona, monkeypatch):
    convs = conversations()
    widths: list[int] = []
    real = type(persona)._batch_losses

    def spy(self, chunk, *args):
        widths.append(max(len(e["input_ids"]) for e in chunk))
        return real(self, chunk, *args)

    monkeypatch.setattr(type(persona), "_batch_losses", spy)
    calls: list[int] = []
    persona.completion_losses(convs, 3, on_batch=calls.append)
    assert calls == [1, 1, 1, 1] and widths == sorted(widths, reverse=True) and widths[0] > widths[-1]


SYSTEM = {"role": "system", "content": "You are Senator Ada Vale of Ohio. Answer in her voice, plainly, as she would."}


@pytest.mark.parametrize("batch_size", [2, 5, 16])
def test_a_shared_system_prompt_runs_once_per_batch_with_the_same_numbers(persona, monkeypatch, batch_size):
    import politician_lm.inference as inference

    convs = [[SYSTEM, *c] for c in conversations()]
    shared: list[int] = []
    real = inference.unscored_prefix
    monkeypatch.setattr(inference, "unscored_prefix", lambda *a: shared.append(real(*a)) or shared[-1])
    got = persona.completion_losses(convs, batch_size, on_batch=lambda n: None)
    sizes = [min(batch_size, len(convs) - start) for start in range(0, len(convs), batch_size)]
    assert len(shared) == len(sizes) and all((n >= 8) == (size > 1) for n, size in zip(shared, sizes))
    assert_same(got, reference_losses(persona, convs, batch_size))
    assert_same(got, persona.completion_losses(convs, batch_size, on_batch=lambda n: None, share_prefix=False))
    with persona.model.disable_adapter():
        assert_same(
            persona.completion_losses(convs, batch_size, on_batch=lambda n: None),
            reference_losses(persona, convs, batch_size),
        )


def test_in_order_batches_carry_the_system_prompt_to_the_next_batch_with_the_same_numbers(persona, monkeypatch):
    """Groups of rows that share a question, all behind one system prompt, batched in the order given (the stance
    probe's fallback where the head cannot be split off). The system prompt runs once; each later batch runs only
    the rest of its question on the carried keys and values, then its answers; every loss is the full-logits
    pass's."""
    import politician_lm.inference as inference
    import politician_lm.model.decoding as decoding

    questions = ["Do you support a higher minimum wage?", "Do you support new tariffs?", "Do you support it?"]
    answers = ["Yes, I support it.", "Yes.", "No, I oppose it.", "No. I oppose that, folks."]
    convs = [
        [SYSTEM, {"role": "user", "content": f"USER: {q}"}, {"role": "assistant", "content": f"POLITICIAN: {a}"}]
        for q in questions
        for a in answers
    ]
    full_prefix: list[int] = []
    real_full = decoding.repeated_prefix_cache
    monkeypatch.setattr(decoding, "repeated_prefix_cache", lambda *a: full_prefix.append(a[3]) or real_full(*a))
    chunks: list[list[int]] = []
    real_batch = type(persona)._batch_losses

    def spy(self, chunk, *args):
        chunks.append([len(e["input_ids"]) for e in chunk])
        return real_batch(self, chunk, *args)

    monkeypatch.setattr(type(persona), "_batch_losses", spy)
    backbone = inference._backbone_and_head(persona.model)[0]
    forwards: list[tuple[int, int]] = []  # (rows, tokens) of every backbone pass
    hook = backbone.register_forward_pre_hook(
        lambda m, a, kw: forwards.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        got = persona.completion_losses(convs, len(answers), on_batch=lambda n: None, in_order=True)
    finally:
        hook.remove()
    assert len(full_prefix) == 1 and len(chunks) == len(questions)  # the system prompt ran once
    # each group: its prefix past the carried part (one row), then its answers (the head's check ran once, above)
    assert [rows for rows, _ in forwards] == [1, len(answers)] * len(questions)
    assert forwards[2][1] < forwards[0][1] / 2  # the second group's prefix: the system prompt was carried
    lengths = [
        len(
            encode(
                persona.tokenizer,
                *persona.style.render(c, persona.tokenizer),
                persona.context_window,
                add_bos=persona._bos,
            )["input_ids"]
        )
        for c in convs
    ]
    assert chunks == [lengths[i : i + len(answers)] for i in range(0, len(convs), len(answers))]  # as given
    assert lengths[:4] != sorted(lengths[:4], reverse=True)  # longest first would have batched them otherwise
    assert_same(got, reference_losses(persona, convs, len(answers)))
    assert_same(got, persona.completion_losses(convs, len(answers), on_batch=lambda n: None, share_prefix=False))


def test_the_shared_prefix_stops_before_the_first_scored_position(persona):
    """Two rows whose prompts are equal: the prefix must leave the prompt's last token (it predicts the first
    completion token) to the per-row pass, or that token's loss would be lost."""
    import politician_lm.inference as inference

    conv = [SYSTEM, {"role": "user", "content": "USER: Same question."}]
    convs = [conv + [{"role": "assistant", "content": f"POLITICIAN: Answer {w}."}] for w in ("one", "two")]
    encoded = [
        encode(
            persona.tokenizer, *persona.style.render(c, persona.tokenizer), persona.context_window, add_bos=persona._bos
        )
        for c in convs
    ]
    first_scored = min(next(i for i, x in enumerate(e["labels"]) if x != IGNORE_INDEX) for e in encoded) - 1
    width = max(len(e["input_ids"]) for e in encoded)
    ids = torch.tensor([e["input_ids"] + [0] * (width - len(e["input_ids"])) for e in encoded])
    mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in encoded])
    labels = torch.tensor([e["labels"] + [IGNORE_INDEX] * (width - len(e["labels"])) for e in encoded])
    assert inference.unscored_prefix(ids, mask, labels[:, 1:] != IGNORE_INDEX) == first_scored
    assert_same(persona.completion_losses(convs, 2, on_batch=lambda n: None), reference_losses(persona, convs, 2))


def test_without_on_batch_a_progress_bar_is_shown(persona, capsys):
    persona.completion_losses(conversations(4), 2)
    err = capsys.readouterr().err
    assert "Held-out loss" in err and "batch" in err


def test_a_model_without_a_separable_head_takes_the_full_logits_path(persona, monkeypatch, tiny_path):
    import politician_lm.inference as inference

    convs = conversations()
    monkeypatch.setattr(inference, "_backbone_and_head", lambda model: None)
    assert_same(persona.completion_losses(convs, 3, on_batch=lambda n: None), reference_losses(persona, convs, 3))
    monkeypatch.undo()
    plain = replace(persona, model=load_persona(base_model=tiny_path).model)  # no PEFT wrapper: no split either
    assert_same(plain.completion_losses(convs, 3, on_batch=lambda n: None), reference_losses(plain, convs, 3))


def test_a_row_dropped_as_too_long_scores_zero_tokens(persona):
    convs = conversations(5)
    convs.insert(2, [{"role": "user", "content": "word " * 1500}, {"role": "assistant", "content": "Folks."}])
    got = persona.completion_losses(convs, 3, on_batch=lambda n: None)
    assert got[2] == (0.0, 0)
    assert_same(got, reference_losses(persona, convs, 3))
    assert persona.completion_losses(convs[2:3], 3, on_batch=lambda n: None) == [(0.0, 0)]  # no forward pass at all
    assert persona.completion_losses([], 3, on_batch=lambda n: None) == []


def test_smollm2_matches_the_full_logits_pass(smollm2):
    """On a 49,152-token vocabulary the old fp32 cross-entropy, a softmax along the strided vocabulary dimension of
    [rows, vocabulary, positions], is itself off by up to ~4e-5 of a row's sum (CPU); the new one, on contiguous
    [positions, vocabulary] rows, is within 1e-5 of the same pass in fp64, and within 1e-4 of the old fp32 numbers."""
    from peft import LoraConfig, get_peft_model

    base = load_persona(base_model=smollm2, quantization="nf4")  # NF4, as the adapters' base is loaded
    model = get_peft_model(base.model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0))
    randomize_lora_b(model, std=0.02)
    model.eval()
    style = PromptStyle("chat", system_prompt="You are Joe Biden. Answer in his voice.", politician="biden")
    persona = replace(base, model=model, style=style)
    rows = [json.loads(line) for line in (ROOT / "data" / "biden" / "policy.jsonl").read_text().splitlines()[:8]]
    convs = [
        [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}] for r in rows
    ]
    assert len({len(persona.prompt_ids(c)) for c in convs}) > 4
    for context, batch_size in ((nullcontext(), 3), (model.disable_adapter(), 8)):
        with context:
            got = persona.completion_losses(convs, batch_size, on_batch=lambda n: None)
            assert_same(got, reference_losses(persona, convs, batch_size, torch.float64))
            assert_same(got, reference_losses(persona, convs, batch_size), rtol=1e-4)
