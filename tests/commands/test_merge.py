"""merge: the exact `cat` method, every PEFT method, and clean errors before any heavy work."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from politician_lm.cli import main
from politician_lm.commands.merge import merge
from politician_lm.inference import load_persona
from tests.helpers import fit_adapter, pc_rows

IDS = torch.tensor([[1, 40, 400, 77, 901, 12, 555, 3]])


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_path):
    root = tmp_path_factory.mktemp("adapters")
    a = fit_adapter(root / "a", tiny_path, pc_rows(12, "style"), lora_r=4, lora_alpha=8, use_rslora=True)
    b = fit_adapter(root / "b", tiny_path, pc_rows(12, "policy")[::-1], lora_r=8, lora_alpha=16, lr=1e-2)
    c = fit_adapter(root / "c", tiny_path, pc_rows(12, "identity"), lora_r=8, lora_alpha=8)
    return a, b, c


def deltas(model, names):
    """Effective update per LoRA layer and adapter: get_delta_weight = scale * B @ A."""
    out = {}
    for path, module in model.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "lora_A"):
            out[path] = {n: module.get_delta_weight(n).float() for n in names if n in module.lora_A}
    return out


@pytest.mark.slow
def test_cat_merge_is_the_exact_weighted_sum_of_updates(adapters, tiny_path, tmp_path):
    a, b, _ = adapters
    out = merge([str(a), str(b)], [0.7, 0.3], str(tmp_path / "merged"))
    base = AutoModelForCausalLM.from_pretrained(tiny_path)
    model = PeftModel.from_pretrained(base, str(a), adapter_name="a")
    model.load_adapter(str(b), adapter_name="b")
    model.load_adapter(str(out), adapter_name="m")
    layers = deltas(model, ["a", "b", "m"])
    assert len(layers) == 14
    for path, d in layers.items():
        assert d["a"].abs().max() > 0 and d["b"].abs().max() > 0, f"{path}: source adapters must be non-trivial"
        torch.testing.assert_close(d["m"], 0.7 * d["a"] + 0.3 * d["b"], rtol=0, atol=1e-6, msg=path)
    # logits: the merged adapter == both sources active at scales 0.7 and 0.3 (quantized base, as trained)
    both = load_persona([str(a), str(b)], [0.7, 0.3])
    merged = load_persona([str(out)])
    with torch.no_grad():
        torch.testing.assert_close(
            merged.model(input_ids=IDS).logits, both.model(input_ids=IDS).logits, rtol=0, atol=1e-4
        )
        plain = load_persona([str(a)])
        assert (plain.model(input_ids=IDS).logits - both.model(input_ids=IDS).logits).abs().max() > 1e-3
    card = (out / "README.md").read_text()
    assert str(a) in card and "0.7" in card and "0.3" in card and "exact" in card
    meta = json.loads((out / "politician_lm.json").read_text())
    assert [m["weight"] for m in meta["merged_from"]] == [0.7, 0.3] and meta["prompt_format"] == "plain"


@pytest.mark.slow
def test_linear_merge_is_not_a_weighted_sum_of_updates(adapters, tiny_path, tmp_path):
    """Documented: PEFT's linear averages A and B separately, so its update has cross terms."""
    _, b, c = adapters  # equal ranks
    out = merge([str(b), str(c)], [0.7, 0.3], str(tmp_path / "lin"), method="linear")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_path), str(b), adapter_name="b")
    model.load_adapter(str(c), adapter_name="c")
    model.load_adapter(str(out), adapter_name="m")
    worst = max(
        (d["m"] - 0.7 * d["b"] - 0.3 * d["c"]).abs().max().item() for d in deltas(model, ["b", "c", "m"]).values()
    )
    assert worst > 1e-4


@pytest.mark.parametrize(
    "method,density",
    [
        ("svd", None),
        ("ties", 0.5),
        ("dare_linear", 0.5),
        ("dare_ties", 0.5),
        ("magnitude_prune", 0.5),
        ("linear", None),
    ],
)
@pytest.mark.slow
def test_every_method_writes_a_loadable_adapter(adapters, tmp_path, method, density):
    _, b, c = adapters
    out = merge(f"{b},{c}", "0.6,0.4", str(tmp_path / method), method=method, density=density)
    persona = load_persona([str(out)])
    with torch.no_grad():
        assert torch.isfinite(persona.model(input_ids=IDS).logits).all()
    assert f"--method {method}" in (out / "README.md").read_text()


@pytest.mark.slow
def test_merged_adapter_loads_with_plain_peft_in_a_fresh_process(adapters, tiny_path, tmp_path):
    a, b, _ = adapters
    out = tmp_path / "merged"
    main(["merge", "--adapters", f"{a},{b}", "--weights", "0.7,0.3", "--output-dir", str(out)])
    script = (
        "import sys, torch; from transformers import AutoModelForCausalLM; from peft import PeftModel;"
        "m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sys.argv[1]), sys.argv[2]);"
        "print(sum(p.numel() for n, p in m.named_parameters() if 'lora_' in n))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, tiny_path, str(out)], capture_output=True, text=True, check=True
    )
    assert int(proc.stdout.strip().splitlines()[-1]) > 0


def test_list_form_of_the_arguments(adapters, tmp_path):
    a, b, _ = adapters
    main(["merge", f"--adapters=[{a}, {b}]", "--weights=[0.5, 0.5]", f"--output_dir={tmp_path / 'o'}"])
    assert (tmp_path / "o" / "adapter_model.safetensors").is_file()


def _broken(tmp_path, src, kind):
    bad = tmp_path / kind
    shutil.copytree(src, bad)
    if kind == "no-config":
        (bad / "adapter_config.json").unlink()
    elif kind == "no-weights":
        (bad / "adapter_model.safetensors").unlink()
    elif kind == "truncated":
        data = (bad / "adapter_model.safetensors").read_bytes()
        (bad / "adapter_model.safetensors").write_bytes(data[: len(data) // 3])
    elif kind == "pickle":
        (bad / "adapter_model.safetensors").unlink()
        (bad / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    elif kind == "other-base":
        cfg = json.loads((bad / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = "mistralai/Mistral-7B-v0.1"
        (bad / "adapter_config.json").write_text(json.dumps(cfg))
    elif kind == "other-targets":
        cfg = json.loads((bad / "adapter_config.json").read_text())
        cfg["target_modules"] = ["q_proj", "v_proj"]
        (bad / "adapter_config.json").write_text(json.dumps(cfg))
    return bad


CASES = [  # (id, how to build the args from adapters a, b, c and tmp_path, fragment of the one-line error)
    ("weights-count", lambda a, b, c, t: ["--adapters", f"{a},{b}", "--weights", "0.7"], "2 adapters"),
    ("weights-nan", lambda a, b, c, t: ["--adapters", f"{a},{b}", "--weights", "0.7,nan"], "not a finite number"),
    ("weights-empty", lambda a, b, c, t: ["--adapters", f"{a},{b}", "--weights", ","], "--weights is empty"),
    ("weights-word", lambda a, b, c, t: ["--adapters", f"{a},{b}", "--weights", "0.7,abc"], "not a number"),
    (
        "negative-ties",
        lambda a, b, c, t: ["--adapters", f"{b},{c}", "--weights", "0.7,-0.3", "--method", "ties", "--density", "0.5"],
        "negative",
    ),
    ("no-adapters", lambda a, b, c, t: ["--adapters", "", "--weights", "1"], "--adapters is empty"),
    (
        "rank-mismatch",
        lambda a, b, c, t: ["--adapters", f"{a},{b}", "--weights", "0.5,0.5", "--method", "linear"],
        "equal rank",
    ),
    (
        "density-missing",
        lambda a, b, c, t: ["--adapters", f"{b},{c}", "--weights", "0.5,0.5", "--method", "dare_ties"],
        "needs --density",
    ),
    ("missing-folder", lambda a, b, c, t: ["--adapters", f"{a},{t}/nope", "--weights", "0.5,0.5"], "does not exist"),
    (
        "no-config",
        lambda a, b, c, t: ["--adapters", f"{a},{_broken(t, b, 'no-config')}", "--weights", "0.5,0.5"],
        "missing adapter_config.json",
    ),
    (
        "no-weights",
        lambda a, b, c, t: ["--adapters", f"{a},{_broken(t, b, 'no-weights')}", "--weights", "0.5,0.5"],
        "missing adapter_model.safetensors",
    ),
    (
        "truncated",
        lambda a, b, c, t: ["--adapters", f"{a},{_broken(t, b, 'truncated')}", "--weights", "0.5,0.5"],
        "not a readable safetensors file",
    ),
    (
        "pickle",
        lambda a, b, c, t: ["--adapters", f"{a},{_broken(t, b, 'pickle')}", "--weights", "0.5,0.5"],
        "pickle weights",
    ),
    (
        "other-base",
        lambda a, b, c, t: ["--adapters", f"{a},{_broken(t, b, 'other-base')}", "--weights", "0.5,0.5"],
        "use adapters of one base",
    ),
    (
        "other-targets",
        lambda a, b, c, t: ["--adapters", f"{a},{_broken(t, b, 'other-targets')}", "--weights", "0.5,0.5"],
        "must target the same modules",
    ),
    ("same-twice", lambda a, b, c, t: ["--adapters", f"{a},{a}", "--weights", "0.5,0.5"], "same adapter twice"),
    (
        "svd-rank-unused",  # PEFT reads svd_rank for svd alone: cat ignored it without a word
        lambda a, b, c, t: ["--adapters", f"{a},{b}", "--weights", "0.5,0.5", "--svd_rank", "4"],
        "--svd_rank applies only to --method svd, not cat",
    ),
    (
        "svd-rank-wider-than-a-layer",  # PEFT saved an adapter no base could load (65), or failed mid-merge (129)
        lambda a, b, c, t: ["--adapters", f"{a},{b}", "--weights", "0.5,0.5", "--method", "svd", "--svd_rank", "65"],
        "--svd_rank 65: an adapted layer is 64 wide, so an svd merge keeps at most 64",
    ),
    (
        "svd-rank-far-wider",
        lambda a, b, c, t: ["--adapters", f"{a},{b}", "--weights", "0.5,0.5", "--method", "svd", "--svd_rank", "129"],
        "so an svd merge keeps at most 64",
    ),
    (
        "unknown-method",
        lambda a, b, c, t: ["--adapters", f"{a},{b}", "--weights", "0.5,0.5", "--method", "average"],
        "method",
    ),
]


@pytest.mark.parametrize("case,build,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_merge_inputs_fail_cleanly(adapters, tmp_path, capsys, case, build, fragment):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["merge", *build(*adapters, tmp_path), "--output_dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and fragment in err, err
    assert not out.exists()


def test_existing_output_is_refused_unless_overwrite(adapters, tmp_path, capsys):
    a, b, _ = adapters
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exc:
        main(["merge", "--adapters", f"{a},{b}", "--weights", "0.5,0.5", "--output_dir", str(out)])
    assert exc.value.code == 2 and "output folder exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    main(["merge", "--adapters", f"{a},{b}", "--weights", "0.5,0.5", "--output_dir", str(out), "--overwrite", "true"])
    assert (out / "adapter_model.safetensors").is_file() and not (out / "keep.txt").exists()


def test_merged_metadata_keeps_no_training_progress_of_its_first_source(adapters, tmp_path):
    a, b, _ = adapters
    assert "global_step" in json.loads((a / "politician_lm.json").read_text())
    out = tmp_path / "merged"
    main(["merge", "--adapters", f"{a},{b}", "--weights", "0.7,0.3", "--output_dir", str(out)])
    meta = json.loads((out / "politician_lm.json").read_text())
    assert not {"global_step", "epoch", "best_score", "monitor"} & meta.keys(), meta
    assert meta["prompt_format"] == "plain" and meta["merge_method"] == "cat" and len(meta["merged_from"]) == 2
