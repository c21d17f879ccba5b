"""Layouts that place tokens by ``position_ids`` (packed rows, preference pair rows, the stance probe's grouped
rows) on a model that ignores them: BLOOM takes its ALiBi positions from the attention mask. The probe falls back to
a row per answer; packing and preference stages are refused with one line. Packing also needs the examples of a row
kept apart, which OPT does not do although it reads ``position_ids``: refused there too."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, BloomConfig, BloomForCausalLM

from politician_lm.data.templates import PromptStyle
from politician_lm.errors import UserError
from politician_lm.inference import Persona
from politician_lm.model.scoring import Scorer, reads_positions, separates_packed, split_head
from tests.data.test_batching import rows as sft_rows
from tests.helpers import first_train_batch, randomize_lora_b
from tests.model.test_preference import pair_datamodule, pair_rows
from tests.test_architectures import random_model
from tests.test_completion_losses import reference_losses
from tests.test_stance_losses import probe_rows


def lora(model, targets):
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    randomize_lora_b(model)
    return model.eval()


@pytest.fixture(scope="module")
def bloom(tiny_path):
    """A random 2-layer BLOOM (ALiBi, eager attention) with LoRA, over the tiny model's tokenizer."""
    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.pad_token = tok.pad_token or tok.eos_token  # as load_persona gives it
    torch.manual_seed(0)
    config = BloomConfig(vocab_size=len(tok), hidden_size=64, n_layer=2, n_head=4, pad_token_id=tok.pad_token_id)
    return lora(BloomForCausalLM(config), ["query_key_value"]), tok


@pytest.fixture(scope="module")
def opt(tiny_path):
    """A random 2-layer OPT (learned positions, SDPA) with LoRA: reads ``position_ids``, masks from the attention
    mask alone."""
    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.pad_token = tok.pad_token or tok.eos_token
    return lora(random_model("opt", tok), ["q_proj", "v_proj"])


def test_rotary_positions_are_read_and_alibi_positions_are_not(tiny_path, bloom, opt):
    llama = lora(AutoModelForCausalLM.from_pretrained(tiny_path), ["q_proj", "v_proj"])
    assert reads_positions(llama) and reads_positions(opt)
    assert not reads_positions(bloom[0])
    # packed examples: kept apart by the tiny Llama (transformers' mask from position_ids), not by OPT or BLOOM
    assert separates_packed(llama)
    assert not separates_packed(opt) and not separates_packed(bloom[0])


def test_the_stance_probe_scores_a_row_per_answer_where_positions_are_ignored(bloom):
    """The grouped row would hand BLOOM a 4D mask it cannot build ALiBi from; the probe's numbers must still be the
    full pass's, row by row."""
    model, tok = bloom
    persona = Persona(model=model, tokenizer=tok, style=PromptStyle())
    convs = probe_rows()
    got = persona.stance_losses(convs)
    want = reference_losses(persona, convs)  # full-vocabulary logits of every row, one plain forward a batch
    assert [n for _, n in got] == [n for _, n in want] and all(n > 0 for _, n in got)
    torch.testing.assert_close([s for s, _ in got], [s for s, _ in want], rtol=1e-5, atol=1e-4)


def test_packing_and_pair_rows_are_refused_in_one_line(tmp_path, tiny_path, bloom):
    model, _ = bloom
    scorer = Scorer(model, split_head(model), torch.float32)
    _, packed = first_train_batch(tmp_path / "sft", tiny_path, sft_rows(24), batch_size=2, packing=True)
    assert "position_ids" in packed
    with pytest.raises(UserError, match=r"data.packing: BloomForCausalLM attends across the examples packed"):
        scorer.token_loss(packed)
    pairs = next(iter(pair_datamodule(tmp_path / "dpo", tiny_path, pair_rows(4)).train_dataloader()))
    with pytest.raises(UserError, match=r"preference stages need a model with rotary or learned positions"):
        scorer.pair_logps(pairs)
    _, padded = first_train_batch(tmp_path / "pad", tiny_path, sft_rows(24), batch_size=2)
    assert torch.isfinite(scorer.token_loss(padded))  # padded rows carry no position_ids: BLOOM trains on them


def test_an_architecture_without_sdpa_loads_with_eager_attention(tmp_path, bloom, caplog):
    """``sdpa`` is the default; BLOOM has none, and transformers' refusal comes before any weight loads."""
    from politician_lm.model.loading import load_base_model

    BloomForCausalLM(bloom[0].get_base_model().config).save_pretrained(tmp_path / "bloom")
    loaded = load_base_model(str(tmp_path / "bloom"), "none", torch.float32, torch.device("cpu"))
    assert loaded.config._attn_implementation == "eager"
    assert "no SDPA attention for this architecture; using eager" in caplog.text


def test_packing_is_refused_where_packed_examples_would_see_each_other(tmp_path, tiny_path, opt):
    """OPT reads position_ids, so the position check passes, but its packed rows would attend across examples."""
    scorer = Scorer(opt, split_head(opt), torch.float32)
    _, packed = first_train_batch(tmp_path / "sft", tiny_path, sft_rows(24), batch_size=2, packing=True)
    with pytest.raises(UserError, match=r"^data.packing: OPTForCausalLM attends across .*; set data.packing: false$"):
        scorer.token_loss(packed)
    _, padded = first_train_batch(tmp_path / "pad", tiny_path, sft_rows(24), batch_size=2)
    assert torch.isfinite(scorer.token_loss(padded))


def test_the_stance_probe_keeps_grouped_rows_on_a_model_with_learned_positions(tiny_path, opt):
    """OPT takes the grouped row's 4D mask and position_ids (unlike packing, where it has no mask to go by), so the
    probe keeps its one-row-a-statement layout there, with the full pass's numbers."""
    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.pad_token = tok.pad_token or tok.eos_token
    persona = Persona(model=opt, tokenizer=tok, style=PromptStyle())
    convs = probe_rows()
    got, want = persona.stance_losses(convs), reference_losses(persona, convs)
    assert [n for _, n in got] == [n for _, n in want] and all(n > 0 for _, n in got)
    torch.testing.assert_close([s for s, _ in got], [s for s, _ in want], rtol=1e-5, atol=1e-4)
