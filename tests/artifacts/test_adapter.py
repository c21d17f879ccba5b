import json

import pytest

from politician_lm.artifacts.adapter import METADATA_FILE, read_adapter, read_metadata, write_metadata
from politician_lm.errors import UserError


def folder_with(tmp_path, config) -> object:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "config,message",
    [
        ("{oops", "not valid JSON"),
        ({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 4}, "not a LoRA adapter config"),
        ({"peft_type": "LORA", "r": 4}, "missing adapter_model.safetensors"),
        ("[1]", "not a PEFT adapter config"),
        ({"peft_type": "LORA", "r": "four"}, "r is 'four'"),
    ],
)
def test_a_bad_adapter_folder_is_one_line_naming_it(tmp_path, config, message):
    with pytest.raises(UserError, match=message):
        read_adapter(folder_with(tmp_path, config))


@pytest.mark.slow  # a fresh interpreter, and peft's import at the end
def test_the_checks_before_loading_import_neither_peft_nor_torch(tmp_path, tiny_path):
    import subprocess
    import sys

    from tests.helpers import fit_adapter, pc_rows

    adapter = fit_adapter(tmp_path, tiny_path, pc_rows(8), max_steps=1, lora_r=4)
    code = (
        "import sys; from politician_lm.artifacts.adapter import read_adapter, check_loadable; "
        f"f = read_adapter({str(adapter)!r}); base = check_loadable([f], None); "
        "print(sorted(m for m in ('peft', 'torch', 'transformers') if m in sys.modules), f.rank, f.fan_in_fan_out); "
        "from peft import PeftConfig; c = PeftConfig.from_pretrained(str(f.path)); "
        "print(c.r == f.rank, c.target_modules == f.target_modules, c.use_dora == f.use_dora)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[] 4 False"  # an evaluate or merge refusal comes before peft's ~10 s import
    assert out[1] == "True True True"  # PEFT's own reading of the file says the same


def test_metadata_round_trip_and_bad_json(tmp_path):
    assert read_metadata(tmp_path) == {}
    write_metadata(tmp_path, {"prompt_format": "chat", "politician": "biden", "base_model": "m"})
    assert read_metadata(tmp_path) == {"prompt_format": "chat", "politician": "biden", "base_model": "m"}
    (tmp_path / METADATA_FILE).write_text("[1, 2]")
    with pytest.raises(UserError, match="expected a JSON object"):
        read_metadata(tmp_path)


def test_an_output_file_that_is_a_folder_is_refused_even_with_overwrite(tmp_path):
    from politician_lm.artifacts.atomic import check_output

    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match="is a folder, and --output names the file to write"):
        check_output(tmp_path / "out", True, "--output", folder=False)  # generate wrote, then crashed, before
    assert check_output(tmp_path / "answers.jsonl", True, "--output", folder=False) == tmp_path / "answers.jsonl"
