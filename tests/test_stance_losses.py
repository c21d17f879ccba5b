"""``Persona.stance_losses`` (``model.group_scoring``): every answer of a group in one row after one copy of the
tokens the group shares, several groups a forward pass, the system prompt once. Each row's loss must be the
full-logits pass's, row by row, whatever the groups look like."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

import politician_lm.inference as inference
import politician_lm.model.group_scoring as group_scoring
from politician_lm.artifacts.profiles import load_profile
from politician_lm.artifacts.stances import is_heldout_stance, load_stances
from politician_lm.data.templates import PromptStyle
from politician_lm.evaluation.stances import PROBE_ROWS, probe_conversations
from politician_lm.inference import load_persona
from politician_lm.model.scoring import reads_positions
from tests.helpers import ROOT, randomize_lora_b, tiny_lora_persona
from tests.test_completion_losses import SYSTEM, assert_same, reference_losses

pytestmark = pytest.mark.slow
QUESTIONS = ["Do you support a higher minimum wage?", "Do you support new tariffs?", "Do you support it?"]
ANSWERS = [  # PROBE_ROWS of them, as the probe's statements have: stance_losses groups its rows by that many
    "Yes, I support it.",
    "Yes.",
    "I do, and so does everyone I know.",
    "Absolutely.",
    "No, I oppose it.",
    "No. I oppose that, folks, and I always have.",
    "I don't.",
    "Absolutely not.",
]


@pytest.fixture(scope="module")
def persona(tmp_path_factory, tiny_path):
    return tiny_lora_persona(tmp_path_factory.mktemp("ad"), tiny_path)


assert len(ANSWERS) == PROBE_ROWS


def probe_rows(questions=QUESTIONS, answers=ANSWERS, system=(SYSTEM,)):
    return [
        [*system, {"role": "user", "content": f"USER: {q}"}, {"role": "assistant", "content": f"POLITICIAN: {a}"}]
        for q in questions
        for a in answers
    ]


def encoded(persona, convs):
    from politician_lm.data.tokenize import encode

    return [
        encode(
            persona.tokenizer, *persona.style.render(c, persona.tokenizer), persona.context_window, add_bos=persona._bos
        )
        for c in convs
    ]


def grouped(persona, convs, group=None, **kw):
    body, head = inference._backbone_and_head(persona.model)
    with torch.no_grad():
        return group_scoring.grouped_losses(
            body, head, encoded(persona, convs), group or len(ANSWERS), persona.tokenizer.pad_token_id, **kw
        )


def forward_shapes(persona):
    """``(rows, tokens)`` of every backbone forward pass made while the returned list is live (remove the hook)."""
    body = inference._backbone_and_head(persona.model)[0]
    shapes: list[tuple[int, int]] = []
    hook = body.register_forward_pre_hook(
        lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    return shapes, hook


@pytest.mark.parametrize("adapter", [True, False])
def test_every_answer_scores_as_in_its_own_row_and_the_groups_run_in_one_pass(persona, adapter):
    convs = probe_rows()
    assert reads_positions(persona.model)  # once per model (two 4-token passes), before the passes counted here
    with nullcontext() if adapter else persona.model.disable_adapter():
        shapes, hook = forward_shapes(persona)
        try:
            got = persona.stance_losses(convs)
        finally:
            hook.remove()
        assert_same(got, reference_losses(persona, convs, len(ANSWERS)))
    # the system prompt once (one row), then all three groups in one pass: a row each, not a row per answer
    assert [rows for rows, _ in shapes] == [1, len(QUESTIONS)]


def test_passes_carry_the_system_prompt_and_report_each_pass(persona):
    convs = probe_rows()
    rows = encoded(persona, convs)
    widths = [group_scoring._width(rows[i : i + len(ANSWERS)]) for i in range(0, len(rows), len(ANSWERS))]
    assert widths[2] < widths[1] < widths[0]  # so the passes run the groups in the opposite order
    reported: list[int] = []
    shapes, hook = forward_shapes(persona)
    try:  # room for the two shorter groups in one pass, not for a third row
        got = grouped(persona, convs, on_group=reported.append, tokens_per_pass=2 * widths[1])
    finally:
        hook.remove()
    # the prefix (one row), the first pass; then the second pass's prefix past the carried system prompt (a lone
    # group shares its whole question, which runs here) and the second pass
    assert [rows for rows, _ in shapes] == [1, 2, 1, 1] and shapes[2][1] < shapes[0][1] / 2
    assert reported == [2, 1]
    assert_same(got, reference_losses(persona, convs, len(ANSWERS)))


def test_groups_without_a_long_shared_start_and_of_uneven_size(persona):
    """No system prompt and questions that differ from their first word: nothing is shared across groups, so each
    row runs from token 0; the last group is short; answers that share their first words share those tokens too."""
    questions = ["Minimum wage?", "Tariffs, yes or no?", "Taxes?"]
    answers = ["Yes, I support it.", "Yes, I support it, and loudly.", "No."]
    convs = probe_rows(questions, answers, system=())[:-1]
    assert_same(grouped(persona, convs, group=len(answers)), reference_losses(persona, convs, len(answers)))


def test_a_row_dropped_as_too_long_scores_zero_tokens_and_the_rest_as_before(persona):
    convs = probe_rows()
    convs[5] = [{"role": "user", "content": "word " * 1500}, {"role": "assistant", "content": "Folks."}]
    got = grouped(persona, convs)
    assert got[5] == (0.0, 0)
    assert_same(got[:5] + got[6:], reference_losses(persona, convs[:5] + convs[6:], len(ANSWERS)))
    assert grouped(persona, convs[5:6], group=1) == [(0.0, 0)]


@pytest.mark.parametrize("why", ["no separable head", "no 4D mask"])
def test_a_model_without_a_separable_head_or_a_4d_mask_takes_the_row_per_answer_path(persona, monkeypatch, why):
    convs = probe_rows()
    if why == "no separable head":
        monkeypatch.setattr(inference, "_backbone_and_head", lambda model: None)
    else:  # FlashAttention: it reads a padding mask only, and would let every answer see the others
        monkeypatch.setattr(inference, "takes_block_mask", lambda model: False)
    monkeypatch.setattr(inference, "grouped_losses", None)  # would raise if called
    assert_same(persona.stance_losses(convs), reference_losses(persona, convs, len(ANSWERS)))


def test_which_attention_takes_the_block_mask():
    def model(impl):
        return SimpleNamespace(config=SimpleNamespace(_attn_implementation=impl))

    assert group_scoring.takes_block_mask(model("sdpa")) and group_scoring.takes_block_mask(model("eager"))
    assert not group_scoring.takes_block_mask(model("flash_attention_2"))
    assert not group_scoring.takes_block_mask(SimpleNamespace())


def test_eager_attention_gets_an_additive_mask_and_the_same_numbers(persona):
    convs = probe_rows()
    base = persona.model.get_base_model()
    want = reference_losses(persona, convs, len(ANSWERS))
    base.set_attn_implementation("eager")
    try:
        assert persona.model.config._attn_implementation == "eager"
        got = persona.stance_losses(convs)
    finally:
        base.set_attn_implementation("sdpa")
    assert_same(got, want)


def test_smollm2_stance_probe_matches_a_row_per_answer(smollm2):
    """The real probe's conversations (six held-out Biden statements, eight answers each, behind a persona system
    prompt) on SmolLM2 with a random adapter: within 1e-5 of scoring every answer in its own row."""
    from peft import LoraConfig, get_peft_model

    base = load_persona(base_model=smollm2, quantization="nf4")
    model = get_peft_model(base.model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0))
    randomize_lora_b(model, std=0.02)
    model.eval()
    style = PromptStyle("chat", system_prompt="You are Joe Biden. Answer in his voice.", politician="biden")
    persona = replace(base, model=model, style=style)
    stances = [
        s for s in load_stances(load_profile("biden", str(ROOT / "data" / "profiles"))) if is_heldout_stance(s.id)
    ]
    convs = [c for s in stances[:6] for c in probe_conversations(s)]
    got = persona.stance_losses(convs)
    assert_same(got, persona.completion_losses(convs, PROBE_ROWS, lambda _: None, share_prefix=False))


def test_passes_put_groups_of_like_length_together_within_the_budget():
    widths = [150, 96, 195, 100, 149, 500]
    # shortest first; each pass's rows x its widest stay within 300 tokens, and a group wider than that runs alone
    assert group_scoring._passes(widths, 300) == [[1, 3], [4, 0], [2], [5]]
    assert group_scoring._passes(widths, 10_000) == [[1, 3, 4, 0, 2, 5]]
    assert group_scoring._passes([], 300) == []


def test_plain_format_probes_carry_the_speaker_labels_of_the_training_records(persona):
    """In the plain format prepare's records read ``USER: <question>`` / ``POLITICIAN: <answer>``: the probe's bare
    question and answers are scored labelled so, as ``generate`` asks, not as text the adapter never saw."""
    assert persona.style.prompt_format == "plain"
    bare = [[m | {"content": m["content"].split(": ", 1)[1]} if m["role"] != "system" else m for m in c]
            for c in probe_rows()]  # fmt: skip
    assert_same(persona.stance_losses(bare), reference_losses(persona, probe_rows(), len(ANSWERS)))
    assert persona.stance_losses(bare) != reference_losses(persona, bare, len(ANSWERS))
