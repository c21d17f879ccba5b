"""``politician-lm import-model``: a GGUF file becomes a plain Hugging Face folder; bad input writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from politician_lm.commands.import_model import default_output_dir, import_model
from politician_lm.errors import UserError
from tests.helpers import ROOT, smollm2_gguf


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "politician_lm.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def _unsupported_gguf(path: Path) -> Path:
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "not-a-real-arch")
    writer.add_tensor("w", np.zeros((2, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda d: d / "missing.gguf", "GGUF file not found"),
        (lambda d: (d / "fake.gguf").write_bytes(b"PK\x03\x04 not a gguf") and d / "fake.gguf", "not a GGUF file"),
        (lambda d: _unsupported_gguf(d / "odd.gguf"), "architecture 'not-a-real-arch' cannot be read from GGUF"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, make, message):
    source = make(tmp_path)
    out = tmp_path / "out"
    result = _cli("import-model", "--gguf", str(source), "--output_dir", str(out), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("politician-lm: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_default_output_drops_the_quantization_suffix():
    assert default_output_dir(Path("/x/SmolLM2-135M-Instruct.Q4_1.gguf")) == Path("checkpoints/SmolLM2-135M-Instruct")
    assert default_output_dir(Path("m/Mistral-7B-v0.1-Q4_K_M.gguf")) == Path("checkpoints/Mistral-7B-v0.1")


@pytest.mark.slow
def test_imported_folder_loads_in_plain_transformers_with_the_gguf_logits(smollm2_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from politician_lm.commands.import_model import load_gguf

    folder = Path(smollm2_path)
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in folder.iterdir()
    }
    assert not any(p.name.endswith(".bin") for p in folder.iterdir())
    assert (folder / "model.safetensors").stat().st_mode & 0o044 == 0o044  # readable like the other files
    plain = AutoModelForCausalLM.from_pretrained(folder)
    assert getattr(plain, "hf_quantizer", None) is None and "quantization_config" not in plain.config.to_dict()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert "im_start" in tokenizer.chat_template
    # the end and padding tokens the file declares (a turn ends at <|im_end|>), whatever transformers reads
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.eos_token_id == plain.config.eos_token_id == plain.generation_config.eos_token_id
    from_gguf, _ = load_gguf(smollm2_gguf())
    ids = tokenizer("Folks, here's the deal: the middle class built this country.", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, from_gguf(ids).logits, rtol=0, atol=0)


@pytest.mark.slow
def test_the_tokenizer_takes_the_end_and_padding_tokens_the_config_declares(smollm2_path):
    from transformers import AutoTokenizer, LlamaConfig

    from politician_lm.commands.import_model import declared_special_tokens

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    tokenizer.eos_token, tokenizer.pad_token = "<|im_start|>", None  # as transformers 5.17 reads SmolLM2's file
    declared_special_tokens(tokenizer, LlamaConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2))
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|im_end|>", 2)
    assert tokenizer.bos_token == "<|im_start|>"  # left as it was
    declared_special_tokens(tokenizer, LlamaConfig(eos_token_id=None, pad_token_id=None))  # nothing declared
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 2


@pytest.mark.slow
def test_second_import_is_a_no_op_and_a_foreign_folder_is_refused(smollm2_path, tmp_path, capsys):
    folder = Path(smollm2_path)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert import_model(str(smollm2_gguf()), str(folder)) == folder
    assert "nothing to do" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not an import"):
        import_model(str(smollm2_gguf()), str(other))
    assert (other / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_fit_on_a_missing_imported_model_says_to_import_it(tmp_path):
    result = _cli(
        "fit",
        "--config",
        "configs/smollm2-biden.yaml",
        "--model.model_name_or_path",
        "checkpoints/Not-Imported-Yet",
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        cwd=ROOT,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "politician-lm: error: checkpoints/Not-Imported-Yet: model folder not found; "
        "create it with `politician-lm import-model`"
    )
    assert not (tmp_path / "run").exists()
