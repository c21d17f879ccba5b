"""export-vllm: each persona's one adapter gives the server's logits, the chat template renders the server's prompt
token for token, serve.sh serves every persona from its folder, bad input is one line before any work. vLLM cannot
run here; what it would read is checked as PEFT, transformers' chat templates and a stand-in `vllm` read it."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import jinja2.meta
import pytest
import torch
import yaml
from peft import PeftModel
from transformers import AutoModelForCausalLM

from politician_lm.cli import main
from politician_lm.commands._vllm_files import VLLM_RANKS
from politician_lm.commands.export_vllm import export_vllm
from politician_lm.inference import load_persona
from politician_lm.model.adapters import activate, attach_adapter
from politician_lm.serve.personas import resolve_specs
from politician_lm.serve.protocol import Message, conversation
from politician_lm.serve.served import load_served

pytestmark = pytest.mark.slow

IDS = torch.tensor([[1, 40, 400, 77, 901, 12, 555, 3]])
NASTY = 'Say "hi" %} {{ x }} \\ 😀\nthen go.'  # Jinja syntax, quotes, a backslash, a newline, a non-BMP character
CONVERSATIONS = [
    [{"role": "user", "content": "What about jobs?"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "No"}, {"type": "text", "text": " jargon."}]},
        {"role": "system", "content": "   "},
        {"role": "user", "content": "USER: first question"},
        {"role": "assistant", "content": "  POLITICIAN : first answer"},
        {"role": "user", "content": "\u00a0uſer :\u2003second question"},
    ],
    [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "  an unlabelled answer"},
        {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]},
    ],
    [{"role": "system", "content": NASTY}, {"role": "user", "content": "Human: hey"}],
]


@pytest.fixture(scope="module")
def vllm_registry(registry, voices, tiny_path, tmp_path_factory) -> Path:
    """The serve tests' four personas and one more: a single adapter at a negative weight (PEFT's one-adapter
    combination would take its square root)."""
    entries = yaml.safe_load(registry.read_text())
    entries["neg"] = {"base_model": tiny_path, "adapters": [{"path": str(voices[1]), "weight": -0.5}]}
    path = tmp_path_factory.mktemp("vllm-registry") / "models.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path


@pytest.fixture(scope="module")
def exported(vllm_registry, tmp_path_factory) -> Path:
    return export_vllm(str(tmp_path_factory.mktemp("vllm") / "export dir"), registry=str(vllm_registry))


@pytest.fixture(scope="module")
def served(vllm_registry):
    return load_served(resolve_specs(None, str(vllm_registry), None, None, False))


def deltas(model, name: str) -> dict[str, torch.Tensor]:
    return {
        path: m.get_delta_weight(name).float()
        for path, m in model.named_modules()
        if hasattr(m, "get_delta_weight") and name in getattr(m, "lora_A", {})
    }


def test_each_persona_is_one_adapter_that_gives_the_servers_logits(exported, served, tiny_path):
    model = served.model
    with torch.no_grad():
        model.base_model.disable_adapter_layers()
        bare = model(input_ids=IDS).logits
        model.base_model.enable_adapter_layers()
        want = {}
        for name, persona in served.personas.items():
            attach_adapter(model, exported / name, adapter_name=f"exported-{name}")
            activate(model, persona.adapter)
            want[name] = model(input_ids=IDS).logits
            activate(model, f"exported-{name}")
            got = model(input_ids=IDS).logits
            assert (want[name] - bare).abs().max() > 1e-3, f"{name}: the persona's adapter must change the logits"
            torch.testing.assert_close(got, want[name], rtol=0, atol=2e-5, msg=name)
        # an exported folder is an adapter folder like any: generate and serve load it on the base it names
        alone = load_persona([str(exported / "mix")])
        torch.testing.assert_close(alone.model(input_ids=IDS).logits, want["mix"], rtol=0, atol=2e-5)
    # alone on the plain base, as vLLM loads it: the same update in every layer as the server's adapter
    for name, persona in served.personas.items():
        plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_path), str(exported / name))
        mine, theirs = deltas(plain, "default"), deltas(model, persona.adapter)
        assert mine.keys() == theirs.keys() and mine
        for path in mine:
            torch.testing.assert_close(mine[path], theirs[path], rtol=0, atol=1e-6, msg=f"{name} {path}")
        config = json.loads((exported / name / "adapter_config.json").read_text())
        assert config["lora_alpha"] == config["r"] and not config["use_rslora"] and config["bias"] == "none"
    assert json.loads((exported / "mix" / "adapter_config.json").read_text())["r"] == 16  # 8 + 8, stacked


def test_the_template_renders_each_personas_prompt_as_the_server_does(exported, served):
    template = (exported / "chat_template.jinja").read_text()
    assert "persona" in jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(template))  # vLLM passes it
    rendered = {}
    for name, persona in served.personas.items():
        front = persona.front
        for messages in CONVERSATIONS:
            conv = conversation([Message(**m) for m in messages], front.style.system_prompt, front.style.prompt_format)
            text = front.style.generation_prompt(conv, front.tokenizer)  # routes.py: conversation, then prompt_ids
            text = text if text.startswith(front.tokenizer.bos_token) else front.tokenizer.bos_token + text
            mine = front.tokenizer.apply_chat_template(
                messages, chat_template=template, tokenize=False, add_generation_prompt=True, persona=name
            )
            assert mine == text, name
            assert front.tokenizer(mine, add_special_tokens=False)["input_ids"] == front.prompt_ids(conv), name
            rendered[name, len(messages)] = mine
    biden = served.personas["gamma"].front.style.system_prompt
    assert biden and biden in rendered["gamma", 1] and "Be brief." in rendered["gamma", 6]
    assert rendered["alpha", 6].startswith("<s>") and "USER: " in rendered["alpha", 1]
    assert rendered["alpha", 1] != rendered["gamma", 1]


@pytest.mark.parametrize(
    "messages, kwargs, fragment",
    [
        ([{"role": "user", "content": "hi"}], {}, 'chat_template_kwargs {"persona": NAME}'),
        ([{"role": "user", "content": "hi"}], {"persona": "nobody"}, "unknown persona nobody"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}], {"persona": "alpha"}, "end with"),
        ([{"role": "tool", "content": "x"}, {"role": "user", "content": "hi"}], {"persona": "alpha"}, "role tool"),
    ],
)
def test_the_template_refuses_what_the_server_refuses(exported, tokenizer, messages, kwargs, fragment):
    template = (exported / "chat_template.jinja").read_text()
    with pytest.raises(jinja2.TemplateError, match=fragment):
        tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, **kwargs)


def run_serve_sh(exported: Path, tmp: Path, env: dict | None = None) -> tuple[argparse.Namespace, Path]:
    """``sh serve.sh --port 9`` with a stand-in ``vllm`` that records its arguments; parsed as vLLM's flags."""
    bin_dir, record = tmp / "bin", tmp / "argv.json"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "vllm"
    fake.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd()}, open(os.environ['RECORD'], 'w'))\n"
    )
    fake.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "RECORD": str(record), **(env or {})}
    subprocess.run(["sh", str(exported / "serve.sh"), "--port", "9"], cwd=tmp, env=env, check=True)
    seen = json.loads(record.read_text())
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("verb", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--enable-lora", action="store_true")
    for flag in ("--max-lora-rank", "--max-loras", "--port"):
        parser.add_argument(flag, type=int)
    parser.add_argument("--chat-template")
    parser.add_argument("--chat-template-content-format", choices=["auto", "string", "openai"])
    parser.add_argument("--lora-modules", nargs="+")
    return parser.parse_args(seen["argv"]), Path(seen["cwd"])


def test_serve_sh_serves_every_persona_from_its_folder(exported, vllm_registry, tiny_path, tmp_path):
    args, cwd = run_serve_sh(exported, tmp_path)
    assert args.model == str(Path(tiny_path).resolve()) and args.enable_lora and args.port == 9
    names = sorted(yaml.safe_load(vllm_registry.read_text()))
    modules = dict(m.split("=", 1) for m in args.lora_modules)
    assert sorted(modules) == names and args.max_loras == len(names)
    ranks = [json.loads((cwd / p / "adapter_config.json").read_text())["r"] for p in modules.values()]
    assert all((cwd / modules[n]).resolve() == (exported / n).resolve() for n in names)
    assert args.max_lora_rank in VLLM_RANKS and args.max_lora_rank >= max(ranks) == 16
    assert (cwd / args.chat_template).read_text() == (exported / "chat_template.jinja").read_text()
    assert args.chat_template_content_format == "openai"  # "string" would join text parts with newlines
    args, _ = run_serve_sh(exported, tmp_path, {"BASE": "/models/a base"})
    assert args.model == "/models/a base"
    readme = (exported / "README.md").read_text()
    assert all(f"`{n}`" in readme for n in names) and "vllm serve" in readme and "nf4" in readme
    alpha = next(line for line in readme.splitlines() if line.startswith("| `alpha`"))
    assert alpha.endswith('`{"temperature": 0, "max_tokens": 24}` |')  # greedy, 24 tokens, as the registry says


def edited(adapter: Path, tmp: Path, **config) -> Path:
    copy = tmp / f"edited-{'-'.join(config)}"
    shutil.copytree(adapter, copy)
    cfg = json.loads((copy / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps({**cfg, **config}))
    return copy


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"use_dora": True}, "is a DoRA adapter, which vLLM does not serve"),
        ({"modules_to_save": ["lm_head"]}, "also saves whole modules (lm_head)"),
        ({"bias": "all"}, "trains biases (bias='all')"),
        ({"r": 600}, "vLLM serves ranks up to 512"),
    ],
)
def test_adapters_vllm_cannot_serve_are_one_line_errors(voices, tmp_path, capsys, change, fragment):
    out = tmp_path / "out"
    bad = edited(voices[0], tmp_path, **change)
    with pytest.raises(SystemExit) as exc:
        main(["export-vllm", "--adapters", f"x={bad}", "--output_dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and fragment in err, err
    assert not out.exists()


@pytest.mark.parametrize("where", ["exists", "holds the adapter"])
def test_an_output_that_exists_or_holds_an_adapter_is_refused(voices, tmp_path, capsys, where):
    out, more, fragment = (tmp_path, [], "output folder exists")
    if where == "holds the adapter":  # the run folder of adapters/last: replacing it would delete the input
        out, more, fragment = (voices[0].parent.parent, ["--overwrite", "true"], "the output folder holds the input")
    with pytest.raises(SystemExit) as exc:
        main(["export-vllm", "--adapters", f"x={voices[0]}", "--output_dir", str(out), *more])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and fragment in err, err
    assert (voices[0] / "adapter_model.safetensors").is_file()
