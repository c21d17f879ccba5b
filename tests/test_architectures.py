"""The fast paths on other architectures than Llama, as users bring them, on random 2-layer models with LoRA.
``evaluate``'s: the loss pass (head on completion positions, shared prefix), the stance probe (grouped rows) and
batched greedy generation (shared prefix, left padding) give the plain passes' numbers and answers. Training's
(``build_trainable_model``: the fused gated MLP, recomputed norms, CPU attention's grouped keys and shared mask, the
fused LoRA update, the lean LoRA dropout, the head on labelled positions) give PEFT's own loss and LoRA gradients.
Learned absolute positions (OPT, GPT-2), partial rotary (GPT-NeoX, Phi), logit soft-capping (Gemma 2: the head is
not split off) and grouped keys and values (Qwen 2)."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from politician_lm.artifacts.adapter import check_fits_base, read_adapter
from politician_lm.artifacts.roles import user_turn
from politician_lm.data.templates import PromptStyle
from politician_lm.errors import UserError
from politician_lm.inference import Persona, load_persona
from politician_lm.model.build import build_trainable_model, check_lora_settings
from politician_lm.model.loading import load_base_model
from politician_lm.model.scoring import Scorer, split_head
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


def model_config(model_type: str, tok, **overrides):
    extra, _ = ARCHITECTURES[model_type]
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    return AutoConfig.for_model(model_type, vocab_size=len(tok), **{**SHAPE, **extra, **ids, **overrides})


def random_model(model_type: str, tok):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(model_config(model_type, tok), attn_implementation=attention(model_type))


def attention(model_type: str) -> str:
    return "eager" if model_type == "gemma2" else "sdpa"  # Gemma 2's soft-capped attention: eager, as it loads


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def persona(request, tiny_path) -> Persona:
    _, targets = ARCHITECTURES[request.param]
    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.pad_token = tok.pad_token or tok.eos_token  # as load_persona gives it
    base = random_model(request.param, tok)
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


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_a_training_step_gives_pefts_own_loss_and_gradients(tmp_path, tiny_path, model_type):
    """One padded batch (a prompt masked out, a left-padded row), LoRA on every linear layer with dropout 0.1: the
    built model's loss through ``Scorer`` against the plain PEFT model's own loss, same weights, init and draws."""
    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.pad_token = tok.pad_token or tok.eos_token
    random_model(model_type, tok).save_pretrained(tmp_path / model_type)
    path = str(tmp_path / model_type)
    torch.manual_seed(3)
    ids = torch.randint(3, len(tok), (2, 24))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :8] = -100
    attn = attention(model_type)
    results = []
    for ours in (True, False):
        adapter = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear", task_type="CAUSAL_LM")
        torch.manual_seed(1)
        if ours:
            model = build_trainable_model(
                path,
                "none",
                torch.float32,
                torch.device("cpu"),
                quant_storage="uint8",
                trust_remote_code=False,
                attn_implementation=attn,
                gradient_checkpointing=False,
                adapter=adapter,
            )
        else:
            base = load_base_model(path, "none", torch.float32, torch.device("cpu"), False, attn, quant_storage="uint8")
            model = get_peft_model(base, adapter).train()
        randomize_lora_b(model)
        torch.manual_seed(2)  # the same dropout draws
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if ours:
            loss = Scorer(model, split_head(model), torch.float32).token_loss(batch)
        else:
            loss = model(**batch, use_cache=False).loss
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads))
    (loss, grads), (want_loss, want) = results
    torch.testing.assert_close(loss, want_loss, rtol=1e-6, atol=0)
    assert grads.keys() == want.keys() and len(want) >= 8
    for name, grad in want.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max()), msg=name)


def test_a_conv1d_adapter_fits_its_base_and_serves_as_generate(tmp_path, tiny_path):
    """GPT-2's Conv1D layers keep their weights as [in, out] (PEFT's ``fan_in_fan_out``): the shape check read them
    as [out, in] and refused GPT-2's own adapters. It must accept them, still refuse a base of another width, and
    the served answers must be ``generate``'s."""
    import asyncio

    from politician_lm.serve.engine import Engine, Job, load_served
    from politician_lm.serve.personas import PersonaSpec

    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.pad_token = tok.pad_token or tok.eos_token
    for name, model in (("base", random_model("gpt2", tok)), ("narrow", None)):
        if model is None:
            model = AutoModelForCausalLM.from_config(model_config("gpt2", tok, n_embd=32, hidden_size=32))
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    peft_model = get_peft_model(random_model("gpt2", tok), LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]))
    randomize_lora_b(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")
    folder = read_adapter(tmp_path / "adapter")
    check_fits_base(folder, str(tmp_path / "base"))
    with pytest.raises(UserError, match="does not fit"):
        check_fits_base(folder, str(tmp_path / "narrow"))

    spec = PersonaSpec("p", [str(tmp_path / "adapter")], [1.0], str(tmp_path / "base"))
    questions = ["Hi.", "What is your view on topic number one, and why?", "Tell me about the economy, in detail."]
    persona = load_persona(spec.adapters, spec.weights, spec.base_model)
    want = [persona.generate([[user_turn(q, "plain")]], max_new_tokens=12, do_sample=False)[0] for q in questions]
    engine = Engine(load_served([spec]), max_batch_size=4, batch_wait_s=0.2, max_pending=8)

    async def ask_all() -> list[Job]:
        loop = asyncio.get_running_loop()
        jobs = [Job("p", [user_turn(q, "plain")], 12, {"do_sample": False}, loop) for q in questions]
        assert all(engine.submit(j) for j in jobs)
        for job in jobs:
            while (await asyncio.wait_for(job.events.get(), 120))[0] != "done":
                pass
        return jobs

    try:
        got = [tok.decode(j.tokens, skip_special_tokens=True).strip() for j in asyncio.run(ask_all())]
    finally:
        engine.close()
    assert got == [w.strip() for w in want] and any(got)


def test_lora_settings_peft_refuses_fail_in_one_line_from_the_config_alone(tmp_path, tiny_path):
    """PEFT's refusals (a target the base lacks; a dropout on Mixtral's expert weights, which "all-linear" reaches
    in transformers 5) come before any weight loads: the folder holds the config only."""
    tok = AutoTokenizer.from_pretrained(tiny_path)
    AutoConfig.for_model(
        "mixtral", vocab_size=len(tok), **SHAPE, num_key_value_heads=2, num_local_experts=2, num_experts_per_tok=1
    ).save_pretrained(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
    with pytest.raises(UserError, match=r"^model.target_modules / model.lora_\*: .*MixtralForCausalLM.*lora_dropout"):
        check_lora_settings(str(tmp_path), LoraConfig(lora_dropout=0.05, target_modules="all-linear"), False)
    with pytest.raises(UserError, match=r"q_prj"):
        check_lora_settings(str(tmp_path), LoraConfig(target_modules=["q_prj"]), False)
    check_lora_settings(str(tmp_path), LoraConfig(lora_dropout=0.0, target_modules="all-linear"), False)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    check_lora_settings(tiny_path, LoraConfig(target_modules="all-linear"), False)
    assert torch.equal(torch.get_rng_state(), state)  # a seeded fit's LoRA init must not move: nothing drawn here
