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
    ],
)
def test_a_bad_adapter_folder_is_one_line_naming_it(tmp_path, config, message):
    with pytest.raises(UserError, match=message):
        read_adapter(folder_with(tmp_path, config))


def test_metadata_round_trip_and_bad_json(tmp_path):
    assert read_metadata(tmp_path) == {}
    write_metadata(tmp_path, {"prompt_format": "chat", "politician": "biden", "base_model": "m"})
    assert read_metadata(tmp_path) == {"prompt_format": "chat", "politician": "biden", "base_model": "m"}
    (tmp_path / METADATA_FILE).write_text("[1, 2]")
    with pytest.raises(UserError, match="expected a JSON object"):
        read_metadata(tmp_path)
