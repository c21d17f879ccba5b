"""``evaluate``'s fast paths on other architectures than Llama, as users bring them: the loss pass (head on
completion positions, shared prefix), the stance probe (grouped rows) and batched greedy generation (shared prefix,
left padding) give the plain passes' numbers and answers on random 2-layer models with LoRA. Learned absolute
positions (OPT, GPT-2), partial rotary (GPT-NeoX, Phi), logit soft-capping (Gemma 2: the head is not split off) and
grouped keys and values (Qwen 2)."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from politician_lm.data.templates import PromptStyle
from politician_lm.inference import Persona
from tests.helpers import randomize_lora_b
from tests.test_completion_losses import assert_same, conversations, reference_losses
from tests.test_stance_losses import probe_rows

pytestmark = pytest.mark.slow

SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
ARCHITECTURES = {  # model_type -> (extra config, LoRA targets)
    "opt": ({"ffn_dim": 128, "word_embed_proj_dim": 64, "max_position_embeddings": 1024}, ["q_proj", "v_proj"]),
    "gpt2": ({"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 1024}, ["c_attn"]),
    "gpt_neox": ({"max_position_embeddings": 1024}, ["query_key_value"]),
    "phi": ({"max_position_embeddings": 1024}, ["q_proj", "v_proj"]),
    "gemma2": ({"head_dim": 16, "num_key_value_heads": 4, "max_position_embeddings": 1024}, ["q_proj", "v_proj"]),
    "qwen2": ({"num_key_value_heads": 2, "max_position_embeddings": 1024}, ["q_proj", "v_proj"]),
}


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def persona(request, tiny_path) -> Persona:
    extra, targets = ARCHITECTURES[request.param]
    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.pad_token = tok.pad_token or tok.eos_token  # as load_persona gives it
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    config = AutoConfig.for_model(request.param, vocab_size=len(tok), **SHAPE, **extra, **ids)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(
        config, attn_implementation="sdpa" if request.param != "gemma2" else "eager"
    )
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    randomize_lora_b(model)
    return Persona(model=model.eval(), tokenizer=tok, style=PromptStyle())


def test_the_loss_pass_equals_the_full_logits_pass(persona):
    convs = conversations()
    assert_same(persona.completion_losses(convs), reference_losses(persona, convs))


def test_the_stance_probe_equals_a_plain_pass_of_every_answer(persona):
    convs = probe_rows()
    assert_same(persona.stance_losses(convs), reference_losses(persona, convs))


def test_batched_greedy_answers_are_each_prompts_own(persona):
    """Prompts of different lengths in one left-padded batch: each answer equals the prompt generated alone by
    transformers' own ``generate``."""
    convs = [[{"role": "user", "content": f"USER: Tell me about topic {i}. " + "More. " * (3 * i)}] for i in range(5)]
    answers = persona.generate(convs, max_new_tokens=12, do_sample=False)
    tok = persona.tokenizer
    for conv, answer in zip(convs, answers):
        ids = torch.tensor([persona.prompt_ids(conv)])
        alone = persona.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=12,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
        assert answer == tok.decode(alone[0, ids.shape[1] :], skip_special_tokens=True)
