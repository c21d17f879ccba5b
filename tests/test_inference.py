"""export, generate and chat: the merged model matches base + adapter, prompts are rebuilt as trained."""

import json
import subprocess
import sys

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from politician_lm.adapters.export import export
from politician_lm.cli import main
from politician_lm.data.templates import PromptStyle
from politician_lm.data.tokenize import encode
from politician_lm.generation import load_persona
from tests.conftest import ROOT, fit_adapter, pc_rows

PROMPT = "USER: What is your view on topic number 3?"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_path):
    return fit_adapter(tmp_path_factory.mktemp("ad"), tiny_path, pc_rows(12), lora_r=8, lora_alpha=16, lr=1e-2)


@pytest.fixture(scope="module")
def chat_adapter(tmp_path_factory, tiny_path):
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": "Folks, jobs."}]}
            for i in range(8)]
    root = tmp_path_factory.mktemp("chat")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # for data/profiles
        return fit_adapter(root, tiny_path, rows, data_kw={"prompt_format": "chat", "politician": "biden"})


@pytest.fixture(scope="module")
def exported(adapter, tmp_path_factory):
    return export(str(adapter), str(tmp_path_factory.mktemp("exp") / "model"))


def test_export_is_a_plain_transformers_model_matching_base_plus_adapter(adapter, exported):
    for f in ("model.safetensors", "config.json", "tokenizer.json", "generation_config.json", "politician_lm.json"):
        assert (exported / f).is_file(), f
    config = json.loads((exported / "config.json").read_text())
    assert "quantization_config" not in config  # merged into de-quantized weights, not re-quantized
    model = AutoModelForCausalLM.from_pretrained(exported)
    assert all(type(m).__name__ != "Linear4bit" for m in model.modules())
    reference = load_persona([str(adapter)])  # nf4 base + adapter, exactly as trained
    ids = reference.tokenizer(PROMPT + "\nPOLITICIAN: Folks", return_tensors="pt").input_ids
    with torch.no_grad():
        got, want = model(input_ids=ids).logits, reference.model(input_ids=ids).logits
    # tolerance: float32 rounding of W + scale*B@A versus computing the two terms separately
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_generate_on_export_matches_base_plus_adapter_token_for_token(adapter, exported, tmp_path):
    outs = []
    for name, args in (("adapter", ["--adapters", str(adapter)]), ("export", ["--base_model", str(exported)])):
        out = tmp_path / f"{name}.jsonl"
        main(["generate", *args, "--prompt", PROMPT, "--max_new_tokens", "24", "--do_sample", "false", "--output", str(out)])
        outs.append(json.loads(out.read_text())["generation"])
    assert outs[0] == outs[1] and len(outs[0]) > 0


def test_export_in_bf16(adapter, tmp_path):
    out = export(str(adapter), str(tmp_path / "bf16"), dtype="bfloat16")
    model = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert model.dtype == torch.bfloat16


def test_export_refuses_a_pickle_base_unless_allowed(adapter, tmp_path, tiny_path, capsys):
    base = tmp_path / "pickled-base"
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    base.mkdir()
    model.config.save_pretrained(base)
    torch.save(model.state_dict(), base / "pytorch_model.bin")
    assert not list(base.glob("*.safetensors")) and list(base.glob("*.bin"))
    with pytest.raises(SystemExit) as exc:
        main(["export", "--adapter", str(adapter), "--base_model", str(base), "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "only pickle (*.bin) weights" in err and not (tmp_path / "o").exists()
    out = export(str(adapter), str(tmp_path / "o"), base_model=str(base), allow_pickle=True)  # explicitly allowed
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("fmt", ["plain", "chat"])
def test_generation_rebuilds_the_training_prompt_exactly(adapter, chat_adapter, fmt, tokenizer):
    folder = adapter if fmt == "plain" else chat_adapter
    persona = load_persona([str(folder)])
    meta = json.loads((folder / "politician_lm.json").read_text())
    assert meta["prompt_format"] == fmt
    if fmt == "chat":
        assert persona.style.system_prompt and "Biden" in persona.style.system_prompt
    conv = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "POLITICIAN: Folks, jobs."}]
    style = PromptStyle(**{k: meta[k] for k in ("prompt_format", "separator", "system_prompt", "politician")})
    prompt, completion = style.render(conv, tokenizer)
    trained = encode(tokenizer, prompt, completion, max_length=512)
    n_prompt = trained["labels"].count(-100)
    assert persona.prompt_ids(conv[:1]) == trained["input_ids"][:n_prompt]


def test_generate_reads_a_prompts_file_and_writes_jsonl(adapter, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": PROMPT, "id": 1}) + "\n" +
                       json.dumps({"messages": [{"role": "user", "content": "USER: And taxes?"}], "id": 2}) + "\n")
    out = tmp_path / "gen.jsonl"
    main(["generate", "--adapters", str(adapter), "--prompts_file", str(prompts), "--output", str(out),
          "--max_new_tokens", "8", "--do_sample", "true", "--temperature", "0.9"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2] and all(isinstance(r["generation"], str) for r in rows)


def test_weighted_inference_scales_each_adapter(adapter, chat_adapter):
    """0.5 x adapter + 0.5 x adapter == 1.0 x adapter (same update twice at half scale)."""
    ids = torch.tensor([[1, 40, 400, 77]])
    one = load_persona([str(adapter)])
    with torch.no_grad():
        want = one.model(input_ids=ids).logits
        half = load_persona([str(adapter), str(chat_adapter)], [1.0, 0.0])
        torch.testing.assert_close(half.model(input_ids=ids).logits, want, rtol=0, atol=1e-5)


def test_chat_through_a_pipe(adapter):
    script = "USER: Who are you?\nUSER: And taxes?\n/reset\nUSER: Again?\n/exit\nUSER: never answered\n"
    proc = subprocess.run([sys.executable, "-m", "politician_lm.cli", "chat", "--adapters", str(adapter),
                           "--max_new_tokens", "6", "--do_sample", "false"], input=script, capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert sum(line.startswith("assistant> ") for line in lines) == 3, lines
    assert "(conversation cleared)" in lines


def test_chat_by_politician_name_from_the_registry(adapter, tmp_path):
    registry = tmp_path / "models.yaml"
    registry.write_text(yaml.safe_dump({"biden": {"adapters": [{"path": str(adapter), "weight": 1.0}],
                                                  "generation": {"max_new_tokens": 5, "do_sample": False}}}))
    proc = subprocess.run([sys.executable, "-m", "politician_lm.cli", "chat", "--politician", "biden",
                           "--registry", str(registry)], input="USER: hi\n", capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and proc.stdout.count("> ") == 1, proc.stderr[-2000:]
    bad = subprocess.run([sys.executable, "-m", "politician_lm.cli", "chat", "--politician", "nixon",
                          "--registry", str(registry)], input="", capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "no persona 'nixon'" in bad.stderr


def test_shipped_registry_is_valid():
    entries = yaml.safe_load((ROOT / "configs" / "models.yaml").read_text())
    assert {"biden", "biden-7b", "trump-7b"} <= set(entries)
    for entry in entries.values():
        assert entry["base_model"] and all({"path", "weight"} <= set(a) for a in entry["adapters"])
