"""The model registry reader: every malformed shape is one line naming the file, never a traceback."""

from __future__ import annotations

import pytest

from politician_lm.artifacts.registry import entry_adapters, read_registry, registry_entry
from politician_lm.errors import UserError


def registry(tmp_path, text: str) -> str:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "entry",
    ['"just a string"', "[a, b]", "3"],
    ids=["string", "list", "number"],
)
def test_an_entry_that_is_not_a_mapping_is_one_line(tmp_path, entry):
    path = registry(tmp_path, f"biden: {entry}\n")
    with pytest.raises(UserError, match=r"models.yaml: persona 'biden' must be a mapping") as e:
        registry_entry("biden", path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("adapters", ["[a, b]", "just-a-path", "{path: a}"])
def test_adapters_that_are_not_a_list_of_paths_are_one_line(tmp_path, adapters):
    path = registry(tmp_path, f"biden:\n  adapters: {adapters}\n")
    with pytest.raises(UserError, match=r"needs 'adapters' as a list of \{path, weight\}"):
        registry_entry("biden", path)


def test_unknown_persona_missing_file_and_bad_yaml_are_one_line(tmp_path):
    path = registry(tmp_path, "biden:\n  base_model: b\n")
    with pytest.raises(UserError, match=r"no persona 'nixon'; known: biden"):
        registry_entry("nixon", path)
    with pytest.raises(UserError, match=r"model registry not found; pass --registry or --adapters NAME=PATH"):
        read_registry(str(tmp_path / "nope.yaml"), instead="--adapters NAME=PATH")
    with pytest.raises(UserError, match=r"not valid YAML"):
        read_registry(registry(tmp_path, "biden: [\n"))
    with pytest.raises(UserError, match=r"must map persona names to entries"):
        read_registry(registry(tmp_path, "- biden\n"))


def test_an_entry_gives_its_adapter_paths_and_weights(tmp_path):
    path = registry(tmp_path, "biden:\n  base_model: b\n  adapters: [{path: a, weight: 0.5}, {path: c}]\n")
    entry = registry_entry("biden", path)
    assert entry_adapters(entry) == (["a", "c"], [0.5, 1.0])
    assert entry_adapters({"base_model": "b", "adapters": None}) == ([], [])


def test_the_load_test_registry_serves_the_real_speech_recipes_greedy():
    """configs/models-sotu.yaml names what configs/sotu-{biden,trump}.yaml train, on one base, with no sampling or
    penalty (the load test compares every answer with greedy `generate`)."""
    import yaml

    from tests.helpers import ROOT

    path = str(ROOT / "configs" / "models-sotu.yaml")
    assert set(read_registry(path)) == {"biden", "trump"}
    for name in ("biden", "trump"):
        entry = registry_entry(name, path)
        recipe = yaml.safe_load((ROOT / "configs" / f"sotu-{name}.yaml").read_text())
        assert entry_adapters(entry) == ([f"{recipe['trainer']['default_root_dir']}/adapters/best"], [1.0])
        assert entry["base_model"] == recipe["model"]["model_name_or_path"]
        assert entry["generation"] == {"max_new_tokens": 64}
