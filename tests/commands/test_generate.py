"""export, generate and chat: the merged model matches base + adapter, prompts are rebuilt as trained."""

import io
import json
import subprocess
import sys

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from politician_lm.cli import main
from politician_lm.commands.export import export
from politician_lm.data.templates import PromptStyle
from politician_lm.data.tokenize import encode
from politician_lm.inference import load_persona
from tests.helpers import ROOT, fit_adapter, pc_rows

PROMPT = "USER: What is your view on topic number 3?"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_path):
    return fit_adapter(tmp_path_factory.mktemp("ad"), tiny_path, pc_rows(12), lora_r=8, lora_alpha=16, lr=1e-2)


@pytest.fixture(scope="module")
def chat_adapter(tmp_path_factory, tiny_path):
    rows = [
        {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": "Folks, jobs."}]}
        for i in range(8)
    ]
    root = tmp_path_factory.mktemp("chat")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # for data/profiles
        return fit_adapter(root, tiny_path, rows, data_kw={"prompt_format": "chat", "politician": "biden"})


@pytest.fixture(scope="module")
def exported(adapter, tmp_path_factory):
    return export(str(adapter), str(tmp_path_factory.mktemp("exp") / "model"))


@pytest.mark.slow
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


@pytest.mark.slow
def test_generate_on_export_matches_base_plus_adapter_token_for_token(adapter, exported, tmp_path):
    outs = []
    for name, args in (("adapter", ["--adapters", str(adapter)]), ("export", ["--base_model", str(exported)])):
        out = tmp_path / f"{name}.jsonl"
        main(
            [
                "generate",
                *args,
                "--prompt",
                PROMPT,
                "--max_new_tokens",
                "24",
                "--do_sample",
                "false",
                "--output",
                str(out),
            ]
        )
        outs.append(json.loads(out.read_text())["generation"])
    assert outs[0] == outs[1] and len(outs[0]) > 0


@pytest.mark.slow
def test_export_in_bf16(adapter, tmp_path):
    out = export(str(adapter), str(tmp_path / "bf16"), dtype="bfloat16")
    model = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert model.dtype == torch.bfloat16


@pytest.mark.slow
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
@pytest.mark.slow
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


@pytest.mark.slow
def test_generate_reads_a_prompts_file_and_writes_jsonl(adapter, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"prompt": PROMPT, "id": 1})
        + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "USER: And taxes?"}], "id": 2})
        + "\n"
    )
    out = tmp_path / "gen.jsonl"
    main(
        [
            "generate",
            "--adapters",
            str(adapter),
            "--prompts_file",
            str(prompts),
            "--output",
            str(out),
            "--max_new_tokens",
            "8",
            "--do_sample",
            "true",
            "--temperature",
            "0.9",
        ]
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2] and all(isinstance(r["generation"], str) for r in rows)


@pytest.mark.slow
def test_weighted_inference_scales_each_adapter(adapter, chat_adapter):
    """0.5 x adapter + 0.5 x adapter == 1.0 x adapter (same update twice at half scale), and a weight of 0 switches
    an adapter off: each adapter's update is scaled by its own weight."""
    ids = torch.tensor([[1, 40, 400, 77]])
    one = load_persona([str(adapter)])
    with torch.no_grad():
        want = one.model(input_ids=ids).logits
        halves = load_persona([str(adapter), str(adapter)], [0.5, 0.5])
        torch.testing.assert_close(halves.model(input_ids=ids).logits, want, rtol=0, atol=1e-5)
        with one.model.disable_adapter():  # the update is not nothing, so the sums above compare something
            assert not torch.allclose(one.model(input_ids=ids).logits, want, atol=1e-3)
        off = load_persona([str(adapter), str(chat_adapter)], [1.0, 0.0])
        torch.testing.assert_close(off.model(input_ids=ids).logits, want, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_chat_through_a_pipe(adapter):
    script = "USER: Who are you?\nUSER: And taxes?\n/reset\n/rset\nUSER: Again?\n/quit\nUSER: never answered\n"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "politician_lm.cli",
            "chat",
            "--adapters",
            str(adapter),
            "--max_new_tokens",
            "6",
            "--do_sample",
            "false",
        ],
        input=script,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert sum(line.startswith("assistant> ") for line in lines) == 3, lines
    assert "(conversation cleared)" in lines
    assert "(unknown command /rset: /reset clears the conversation, /exit or /quit quits)" in lines


@pytest.mark.slow
def test_chat_by_politician_name_from_the_registry(adapter, tmp_path):
    registry = tmp_path / "models.yaml"
    registry.write_text(
        yaml.safe_dump(
            {
                "biden": {
                    "adapters": [{"path": str(adapter), "weight": 1.0}],
                    "generation": {"max_new_tokens": 5, "do_sample": False},
                }
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "politician_lm.cli", "chat", "--politician", "biden", "--registry", str(registry)],
        input="USER: hi\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.count("> ") == 1, proc.stderr[-2000:]
    bad = subprocess.run(
        [sys.executable, "-m", "politician_lm.cli", "chat", "--politician", "nixon", "--registry", str(registry)],
        input="",
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "no persona 'nixon'" in bad.stderr


def test_shipped_registry_is_valid():
    entries = yaml.safe_load((ROOT / "configs" / "models.yaml").read_text())
    assert {"biden", "biden-7b", "trump-7b"} <= set(entries)
    for entry in entries.values():
        assert entry["base_model"] and all({"path", "weight"} <= set(a) for a in entry["adapters"])


# -- adapters that work from anywhere ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def relative_adapter(tmp_path_factory):
    """Trained from the repository root with the base given as the relative path the configs use."""
    root = tmp_path_factory.mktemp("rel")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        return fit_adapter(root, "checkpoints/tiny-politician", pc_rows(8), max_steps=1)


@pytest.mark.slow
def test_generate_works_from_another_working_directory(relative_adapter, tmp_path):
    meta = json.loads((relative_adapter / "politician_lm.json").read_text())
    assert meta["base_model"] == "checkpoints/tiny-politician"  # as given, and where it was:
    assert meta["base_model_path"] == str(ROOT / "checkpoints" / "tiny-politician")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "politician_lm.cli",
            "generate",
            "--adapters",
            str(relative_adapter),
            "--prompt",
            PROMPT,
            "--max_new_tokens",
            "4",
            "--do_sample",
            "false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["prompt"] == PROMPT


@pytest.mark.slow
def test_a_moved_base_is_named_and_can_be_given_explicitly(tiny_path, tmp_path, capsys):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_path, base)
    adapter = fit_adapter(tmp_path / "run", str(base), pc_rows(8), max_steps=1)
    base.rename(tmp_path / "moved")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--adapters", str(adapter), "--prompt", PROMPT, "--max_new_tokens", "2"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and str(base) in err and "--base_model" in err
    out = tmp_path / "gen.jsonl"
    main(
        [
            "generate",
            "--adapters",
            str(adapter),
            "--base_model",
            str(tmp_path / "moved"),
            "--prompt",
            PROMPT,
            "--max_new_tokens",
            "2",
            "--output",
            str(out),
        ]
    )
    assert json.loads(out.read_text())["prompt"] == PROMPT


def test_exported_files_are_readable_like_the_others(exported):
    import os

    mask = os.umask(0)
    os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in exported.iterdir()}
    assert modes["model.safetensors"] == 0o666 & ~mask, modes  # safetensors alone wrote 0600
    assert len(set(modes.values())) == 1, modes


# -- chat speaks the training format ------------------------------------------------------------------------------
@pytest.mark.slow
def test_chat_writes_messages_as_training_did(adapter, monkeypatch, capsys):
    from politician_lm.inference import Persona

    seen, original = [], Persona.generate

    def recording(self, conversations, **kw):
        seen.append([dict(m) for m in conversations[0]])
        if len(seen) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second answer
        return original(self, conversations, **kw)

    monkeypatch.setattr(Persona, "generate", recording)
    monkeypatch.setattr(sys, "stdin", io.StringIO("What about jobs?\nAnd taxes?\nUSER: Still there?\n/exit\n"))
    main(["chat", "--adapters", str(adapter), "--max_new_tokens", "4", "--do_sample", "false"])
    out = capsys.readouterr().out
    assert seen[0] == [{"role": "user", "content": "USER: What about jobs?"}]  # as the plain-format data wrote it
    assert seen[1][1]["role"] == "assistant" and seen[1][1]["content"].startswith("POLITICIAN:")
    assert seen[1][2] == {"role": "user", "content": "USER: And taxes?"}
    assert "(answer stopped; the conversation is kept" in out
    assert seen[2][:2] == seen[1][:2] and seen[2][2] == {"role": "user", "content": "USER: Still there?"}


@pytest.mark.parametrize(
    "text,shown",
    [
        ("POLITICIAN: Folks, here is the deal.", "Folks, here is the deal."),
        ("  politician:Folks.", "Folks."),
        ("Folks, no label.", "Folks, no label."),
        ("POL", "POL"),
    ],
)
def test_chat_shows_answers_without_the_politician_label(text, shown, tokenizer, capsys):
    from politician_lm.commands.generate import reply_streamer

    streamer = reply_streamer(tokenizer)
    streamer.put(torch.tensor([tokenizer("USER: hi\n").input_ids]))  # the prompt: skipped
    for token in tokenizer(text, add_special_tokens=False).input_ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert capsys.readouterr().out == shown + "\n"


@pytest.mark.slow
def test_ctrl_c_at_the_chat_prompt_ends_quietly(adapter):
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "politician_lm.cli", "chat", "--adapters", str(adapter)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    for line in proc.stderr:  # wait until the chat reads its first message
        seen.append(line)
        if line.startswith("Chatting with"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    err = "".join(seen) + err
    # 0 when the signal lands in the prompt's read (the chat ends like /exit), 130 a moment before it (the CLI's
    # one-line "interrupted"); never a traceback
    assert proc.returncode in (0, 130) and "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]


@pytest.mark.slow
def test_merged_persona_computes_what_base_plus_adapters_compute(adapter, chat_adapter):
    """generate/chat fold the weighted LoRA updates into the de-quantized fp32 weights once: same logits, no LoRA
    layers left to run per token."""
    import torch

    from politician_lm.inference import load_persona

    kept = load_persona([adapter, chat_adapter], [0.7, 0.3])
    merged = load_persona([adapter, chat_adapter], [0.7, 0.3], merge_adapters=True)
    assert any(hasattr(m, "lora_A") for m in kept.model.modules())
    assert not any(hasattr(m, "lora_A") for m in merged.model.modules())
    ids = torch.tensor([kept.prompt_ids([{"role": "user", "content": "USER: What about jobs?"}])])
    with torch.no_grad():
        a, b = kept.model(input_ids=ids).logits, merged.model(input_ids=ids).logits
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    prompts = [[{"role": "user", "content": "USER: What about jobs?"}], [{"role": "user", "content": "USER: Hi"}]]
    assert merged.generate(prompts, max_new_tokens=8, do_sample=False) == kept.generate(
        prompts, max_new_tokens=8, do_sample=False
    )


@pytest.mark.slow
@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch has no oneDNN")
def test_inference_packs_the_frozen_base_layers_for_onednn_and_computes_what_nn_linear_does(adapter):
    from politician_lm.model.packed_linear import PackedLinear, unpack_linears

    persona = load_persona([str(adapter)])
    kinds = {name: type(m) for name, m in persona.model.named_modules() if isinstance(m, torch.nn.Linear)}
    base = [n for n in kinds if n.endswith("base_layer") or n.endswith("lm_head")]
    lora = [n for n in kinds if ".lora_A." in n or ".lora_B." in n]
    assert (
        base
        and lora
        and all(kinds[n] is PackedLinear for n in base)
        and all(kinds[n] is not PackedLinear for n in lora)
    )
    ids = torch.tensor([[1, 40, 400, 77, 5, 9]])
    with torch.no_grad():
        got = persona.model(input_ids=ids).logits
        unpack_linears(list(persona.model.modules()))
        want = persona.model(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _generated(tmp_path, name, *args):
    out = tmp_path / f"{name}.jsonl"
    main(["generate", "--prompt", PROMPT, "--max_new_tokens", "6", "--do_sample", "false", "--output", str(out), *args])
    return json.loads(out.read_text())["generation"]


def test_a_registry_persona_takes_the_given_weights_and_base_model(adapter, tiny_path, tmp_path):
    """--politician with --weights generated with the registry's weights, and with --base_model (the advice for a
    base folder that moved) without the persona's adapters, both silently (found by a hunt)."""
    registry = tmp_path / "models.yaml"
    registry.write_text(yaml.safe_dump({"quill": {"adapters": [{"path": str(adapter), "weight": 1.0}]}}))
    named = ["--politician", "quill", "--registry", str(registry)]
    bare = _generated(tmp_path, "bare", "--adapters", str(adapter), "--weights", "0")
    full = _generated(tmp_path, "full", "--adapters", str(adapter))
    assert bare != full  # the adapter changes the answer: the comparisons below can fail
    assert _generated(tmp_path, "zero", *named, "--weights", "0") == bare
    assert _generated(tmp_path, "based", *named, "--base_model", str(tiny_path)) == full
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--prompt", PROMPT, *named, "--adapters", str(adapter)])
    assert exc.value.code == 2


def test_generate_and_chat_refuse_token_counts_and_prompts_that_cannot_work(adapter, tmp_path, capsys, monkeypatch):
    """Each was a transformers traceback after the model loaded, or in chat a refusal of every message that blamed
    the message (found by a hunt)."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": 5}]}) + "\n")
    kept = tmp_path / "kept.jsonl"  # the prompts file named as --output too: --overwrite replaced it
    kept.write_text(json.dumps({"prompt": PROMPT}) + "\n")
    cases = [
        (["generate", "--prompt", PROMPT, "--max_new_tokens", "0"], "--max_new_tokens 0: must be at least 1"),
        (["chat", "--max_new_tokens", "-3"], "--max_new_tokens -3: must be at least 1"),
        (["generate", "--prompts_file", str(bad)], f"{bad}:1: every message needs a string 'content'"),
        (["generate", "--prompt", "USER: " + "word " * 3000], "prompt 1: "),
        (["chat", "--max_new_tokens", "5000"], "--max_new_tokens 5000: the context window is"),
        (
            ["generate", "--prompts_file", str(kept), "--output", str(kept), "--overwrite", "true"],
            f"{kept}: is also the input {kept}, which writing it would delete; choose another --output",
        ),
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    for args, says in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([*args, "--adapters", str(adapter)])
        err = capsys.readouterr().err.strip()
        loaded = "--max_new_tokens 5000" in says or says == "prompt 1: "  # known once the model is read
        assert exc.value.code == 2 and (loaded or len(err.splitlines()) == 1), err
        assert err.splitlines()[-1].startswith("politician-lm: error: ") and says in err.splitlines()[-1], err
    assert json.loads(kept.read_text()) == {"prompt": PROMPT}
